"""Triton kernels of the agent attention core: both softmax steps, forward and backward, fused.

Shapes (head-split, any batch / head / token strides, unit channel stride): q (B, H, N, d); k, v (B, H, M, d);
agents (B, H, n, d) with n, d <= 128 (the op sends at most 64 agents: see op.MAX_AGENTS); biases broadcast over the
batch, contiguous: B1 (H, n, M), B2 (H, N, n).

    aggregation  V_A = softmax over M (A K^T s + B1) V    every agent attends to all M tokens
    broadcast    O   = softmax over n (Q A^T s + B2) V_A  every token attends to the n agents

Why not SDPA: its kernels run one program per (batch, head, block of queries), so the aggregation (n queries) has
few programs, and its backward, like the broadcast's (n keys), keeps one program per batch x head that loops over
every block of queries (Agent-Swin-T training on an H200: 7.39 of 34.46 ms of GPU time per step in SDPA's backward).
Here every program owns a block of tokens: the aggregation's forward splits the M tokens across programs, each with
a running max / sum / weighted sum per agent (combined afterwards, as flash decoding does); the broadcast holds all n
scores of a token in one tile. The backward programs own a block of tokens of one head and loop over a chunk of the
batch, so the bias gradients (summed over the batch) stay in registers; the agent and V_A gradients (summed over the
tokens) are written per token block in fp32 and summed afterwards with torch (a fixed order: deterministic).
Scores, softmax and every accumulation are fp32; products take the inputs' dtype (fp32 inputs: fp32 products).
Set TRITON_INTERPRET=1 before importing this module to run them on CPU tensors (tests do this).
"""
import contextlib

import torch
import triton
import triton.language as tl

from .._triton import sm_count


def _pad(x: int) -> int:
    return max(16, triton.next_power_of_2(x))  # tl.dot wants every dim >= 16


# Launch settings a sweep may override (tools/benchmark_parts.py agent_tiles / agent_kernels): 'block_t' (tokens per
# tile), 'num_warps', 'programs_per_sm' (the grids' target), 'bias_row_alignment' (op._aligned_rows). The defaults are
# the sweep's best at Agent-Swin-T's training shapes on an H100 (session 19: 64 tokens per tile and 4 warps at every
# stage; 4 programs per SM with 49 agents, 2 with 9 or 16: fused forward + backward 287 / 160 / 274 us at stages 1-3
# against 331 / 177 / 298 before).
CONFIG_OVERRIDE: dict = {}


@contextlib.contextmanager
def override(**setting):
    """CONFIG_OVERRIDE's settings updated with ``setting`` inside the block (sweeps, tests)."""
    saved = dict(CONFIG_OVERRIDE)
    CONFIG_OVERRIDE.update(setting)
    try:
        yield
    finally:
        CONFIG_OVERRIDE.clear()
        CONFIG_OVERRIDE.update(saved)


def _block_tokens(n_pad: int) -> int:
    """Tokens per tile: [BLOCK_T, n_pad] fp32 score tiles of at most 4096 values (4 warps)."""
    return CONFIG_OVERRIDE.get('block_t') or max(32, min(64, 4096 // n_pad))


def _split(units, programs_per_unit, device, n_pad):
    """(parts, units per part) that cut `units` (token blocks, batches) into about 2 (4 with 64 padded agents)
    programs per SM in all, each part whole units. Plain or symbolic integers (torch.compile with dynamic shapes:
    sym_min / sym_max do not guard, so the grid stays an expression of the sizes)."""
    target = CONFIG_OVERRIDE.get('programs_per_sm', 4 if n_pad >= 64 else 2) * sm_count(device)
    parts = torch.sym_max(1, torch.sym_min(units, triton.cdiv(target, programs_per_unit)))
    per_part = triton.cdiv(units, parts)
    return triton.cdiv(units, per_part), per_part


def _constants(head_dim: int, dtype: torch.dtype, n: int) -> dict:
    """The kernels' compile-time constants and warps for the head dim, the inputs' dtype and n agents."""
    n_pad = _pad(n)
    return dict(N_PAD=n_pad, D_PAD=_pad(head_dim), BLOCK_T=_block_tokens(n_pad), IEEE=dtype == torch.float32,
                num_warps=CONFIG_OVERRIDE.get('num_warps', 4))


def _dims(t: torch.Tensor, heads: int = 0) -> tuple:
    """(B, H, T, d) of a head-split tensor (heads 0) or of the heads of a token-major (B, T, heads * d) one."""
    if not heads:
        return tuple(t.shape)
    B, T, C = t.shape
    return B, heads, T, C // heads


def _strides(t: torch.Tensor, heads: int = 0) -> tuple:
    """(batch, head, token) strides, as _dims: token-major tensors are read in place, with no view op (see
    op.py on compiled graphs; the channel stride is 1)."""
    if not heads:
        return t.stride(0), t.stride(1), t.stride(2)
    return t.stride(0), t.shape[2] // heads, t.stride(1)


def _bias_args(bias, placeholder: torch.Tensor) -> tuple:
    """A bias and its row stride as the kernels take them (a placeholder pointer where there is none)."""
    return (placeholder, 0) if bias is None else (bias, bias.stride(-2))


# ----------------------------------------------------------------------------------------------- device helpers

@triton.jit
def _dot(a, b, IEEE: tl.constexpr):
    """a @ b with fp32 accumulation; operands in their own dtype (IEEE: fp32 operands, no tf32 rounding)."""
    if IEEE:
        return tl.dot(a, b, input_precision='ieee')
    else:
        return tl.dot(a, b)


@triton.jit
def _head(ptr, b, hh, batch_stride, head_stride):
    """ptr moved to (batch b, head hh); the batch offset in 64 bits (a batch of large maps passes 2**31 elements)."""
    return ptr + tl.cast(b, tl.int64) * batch_stride + hh * head_stride


@triton.jit
def _load_rows(ptr, row_stride, rows, n_rows, d, D_PAD: tl.constexpr):
    """[len(rows), D_PAD] tile of rows `rows` (zero beyond n_rows and d)."""
    cols = tl.arange(0, D_PAD)[None, :]
    return tl.load(ptr + rows[:, None] * row_stride + cols, mask=(rows[:, None] < n_rows) & (cols < d), other=0.0)


@triton.jit
def _store_rows(ptr, row_stride, rows, n_rows, d, x, D_PAD: tl.constexpr):
    cols = tl.arange(0, D_PAD)[None, :]
    tl.store(ptr + rows[:, None] * row_stride + cols, x.to(ptr.dtype.element_ty),
             mask=(rows[:, None] < n_rows) & (cols < d))


@triton.jit
def _bias_tile(bias_ptr, hh, rows, cols, n_rows, n_cols, row_stride):
    """fp32 [len(rows), len(cols)] tile of head hh's (n_rows, n_cols) plane of an (H, n_rows, n_cols) bias with unit
    column stride and rows `row_stride` apart (zero outside; see op._aligned_rows for why rows are padded)."""
    return tl.load(bias_ptr + hh * n_rows * row_stride + rows[:, None] * row_stride + cols[None, :],
                   mask=(rows[:, None] < n_rows) & (cols[None, :] < n_cols), other=0.0).to(tl.float32)


@triton.jit
def _agent_tile(ptr, bh, N_PAD: tl.constexpr, D_PAD: tl.constexpr):
    """The fp32 [N_PAD, D_PAD] tile of batch x head bh in a padded (B * H, N_PAD, D_PAD) buffer (V_A, its gradient)."""
    return tl.load(ptr + tl.cast(bh, tl.int64) * N_PAD * D_PAD + tl.arange(0, N_PAD)[:, None] * D_PAD
                   + tl.arange(0, D_PAD)[None, :])


@triton.jit
def _backward_program(BLOCK_T: tl.constexpr, N_PAD: tl.constexpr):
    """A backward program's (token block, head, batch chunk), its tokens and the agent indices."""
    tb = tl.program_id(0)
    return tb, tl.program_id(1), tl.program_id(2), tb * BLOCK_T + tl.arange(0, BLOCK_T), tl.arange(0, N_PAD)


@triton.jit
def _store_tile(ptr, x, R: tl.constexpr, C: tl.constexpr):
    """A full [R, C] fp32 tile at ptr (a padded partial-sum buffer)."""
    tl.store(ptr + tl.arange(0, R)[:, None] * C + tl.arange(0, C)[None, :], x)


# ------------------------------------------------------------------------------------------------------ kernels

@triton.jit(do_not_specialize=['M', 'blocks_per_split'])
def _aggregate_fwd_kernel(a_ptr, sab, sah, san, k_ptr, skb, skh, skm, v_ptr, svb, svh, svm, bias_ptr, sbias,
                          part_ptr, H, n, M, d, scale, blocks_per_split,
                          HAS_BIAS: tl.constexpr, N_PAD: tl.constexpr, D_PAD: tl.constexpr,
                          BLOCK_T: tl.constexpr, IEEE: tl.constexpr):
    """One split of the M tokens for one (batch, head): running max, sum and sum of weighted values per agent,
    stored as a partial row [max (N_PAD), sum (N_PAD), acc (N_PAD * D_PAD)]. Every split's first block holds tokens
    (the launcher sizes the splits so), so the running max is finite after it."""
    scale = tl.cast(scale, tl.float32)  # (inductor may pass it as an fp64 constant: scores stay fp32)
    split = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    hh = bh % H
    agents = tl.arange(0, N_PAD)
    a = _load_rows(_head(a_ptr, b, hh, sab, sah), san, agents, n, d, D_PAD)
    k_base = _head(k_ptr, b, hh, skb, skh)
    v_base = _head(v_ptr, b, hh, svb, svh)
    m_run = tl.full((N_PAD,), float('-inf'), tl.float32)
    l_run = tl.zeros((N_PAD,), tl.float32)
    acc = tl.zeros((N_PAD, D_PAD), tl.float32)
    first = split * blocks_per_split * BLOCK_T
    for i in range(0, blocks_per_split):
        tok = first + i * BLOCK_T + tl.arange(0, BLOCK_T)
        kt = _load_rows(k_base, skm, tok, M, d, D_PAD)
        s = _dot(a, tl.trans(kt), IEEE) * scale
        if HAS_BIAS:
            s += _bias_tile(bias_ptr, hh, agents, tok, n, M, sbias)
        s = tl.where(tok[None, :] < M, s, float('-inf'))
        m_new = tl.maximum(m_run, tl.max(s, 1))
        alpha = tl.exp(m_run - m_new)
        p = tl.exp(s - m_new[:, None])
        l_run = l_run * alpha + tl.sum(p, 1)
        vt = _load_rows(v_base, svm, tok, M, d, D_PAD)
        acc = acc * alpha[:, None] + _dot(p.to(vt.dtype), vt, IEEE)
        m_run = m_new
    row = part_ptr + (split.to(tl.int64) * tl.num_programs(1) + bh) * (N_PAD * (D_PAD + 2))
    tl.store(row + agents, m_run)
    tl.store(row + N_PAD + agents, l_run)
    _store_tile(row + 2 * N_PAD, acc, N_PAD, D_PAD)


@triton.jit
def _aggregate_combine_kernel(part_ptr, va_ptr, stats_ptr, splits, BH,
                              N_PAD: tl.constexpr, D_PAD: tl.constexpr):
    """V_A (B*H, N_PAD, D_PAD) fp32 and the softmax statistics per agent (2, B*H, N_PAD): max score and sum of
    exponentials, from the splits' partials."""
    bh = tl.program_id(0)
    agents = tl.arange(0, N_PAD)
    tile = agents[:, None] * D_PAD + tl.arange(0, D_PAD)[None, :]
    m_run = tl.full((N_PAD,), float('-inf'), tl.float32)
    l_run = tl.zeros((N_PAD,), tl.float32)
    acc = tl.zeros((N_PAD, D_PAD), tl.float32)
    for split in range(0, splits):
        row = part_ptr + (split * BH + bh).to(tl.int64) * (N_PAD * (D_PAD + 2))
        m = tl.load(row + agents)
        m_new = tl.maximum(m_run, m)
        alpha = tl.exp(m_run - m_new)
        beta = tl.exp(m - m_new)
        l_run = l_run * alpha + tl.load(row + N_PAD + agents) * beta
        acc = acc * alpha[:, None] + tl.load(row + 2 * N_PAD + tile) * beta[:, None]
        m_run = m_new
    tl.store(va_ptr + tl.cast(bh, tl.int64) * N_PAD * D_PAD + tile, acc / l_run[:, None])
    tl.store(stats_ptr + tl.cast(bh, tl.int64) * N_PAD + agents, m_run)
    tl.store(stats_ptr + (BH + tl.cast(bh, tl.int64)) * N_PAD + agents, l_run)


@triton.jit(do_not_specialize=['N'])
def _broadcast_fwd_kernel(q_ptr, sqb, sqh, sqn, a_ptr, sab, sah, san, va_ptr, bias_ptr, sbias, o_ptr, sob, soh, son,
                          H, n, N, d, scale,
                          HAS_BIAS: tl.constexpr, N_PAD: tl.constexpr, D_PAD: tl.constexpr,
                          BLOCK_T: tl.constexpr, IEEE: tl.constexpr):
    """O for one block of tokens of one (batch, head)."""
    scale = tl.cast(scale, tl.float32)  # (inductor may pass it as an fp64 constant: scores stay fp32)
    bh = tl.program_id(1)
    b = bh // H
    hh = bh % H
    tok = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    agents = tl.arange(0, N_PAD)
    qt = _load_rows(_head(q_ptr, b, hh, sqb, sqh), sqn, tok, N, d, D_PAD)
    a = _load_rows(_head(a_ptr, b, hh, sab, sah), san, agents, n, d, D_PAD)
    va = _agent_tile(va_ptr, bh, N_PAD, D_PAD).to(qt.dtype)
    s = _dot(qt, tl.trans(a), IEEE) * scale
    if HAS_BIAS:
        s += _bias_tile(bias_ptr, hh, tok, agents, N, n, sbias)
    s = tl.where(agents[None, :] < n, s, float('-inf'))
    m = tl.max(s, 1)
    p = tl.exp(s - m[:, None])
    l = tl.sum(p, 1)
    o = _dot(p.to(va.dtype), va, IEEE) / l[:, None]
    _store_rows(_head(o_ptr, b, hh, sob, soh), son, tok, N, d, o, D_PAD)


@triton.jit(do_not_specialize=['N', 'B', 'per_chunk'])
def _broadcast_bwd_kernel(q_ptr, sqb, sqh, sqn, a_ptr, sab, sah, san, va_ptr, bias_ptr, sbias, do_ptr, sdb, sdh,
                          sdn, dq_ptr, sgb, sgh, sgn, part_ptr, dbias_ptr, B, H, n, N, d, scale, per_chunk,
                          HAS_BIAS: tl.constexpr, BIAS_GRAD: tl.constexpr, N_PAD: tl.constexpr,
                          D_PAD: tl.constexpr, BLOCK_T: tl.constexpr, IEEE: tl.constexpr):
    """For one block of tokens of one head, over a chunk of the batch: dQ, this block's share of dA and dV_A
    (fp32 [N_PAD, D_PAD] partials per block, batch and head: part[block, 0] dA, part[block, 1] dV_A) and, summed
    over the chunk, dB2."""
    scale = tl.cast(scale, tl.float32)  # (inductor may pass it as an fp64 constant: scores stay fp32)
    tb, hh, chunk, tok, agents = _backward_program(BLOCK_T, N_PAD)
    valid = (tok[:, None] < N) & (agents[None, :] < n)
    if HAS_BIAS:
        bias = _bias_tile(bias_ptr, hh, tok, agents, N, n, sbias)
    dbias = tl.zeros((BLOCK_T, N_PAD), tl.float32)
    for b in range(chunk * per_chunk, tl.minimum(chunk * per_chunk + per_chunk, B)):
        bh = b * H + hh
        qt = _load_rows(_head(q_ptr, b, hh, sqb, sqh), sqn, tok, N, d, D_PAD)
        do_t = _load_rows(_head(do_ptr, b, hh, sdb, sdh), sdn, tok, N, d, D_PAD).to(qt.dtype)
        a = _load_rows(_head(a_ptr, b, hh, sab, sah), san, agents, n, d, D_PAD)
        va = _agent_tile(va_ptr, bh, N_PAD, D_PAD).to(qt.dtype)
        s = _dot(qt, tl.trans(a), IEEE) * scale
        if HAS_BIAS:
            s += bias
        # the softmax over the agents anew from these scores, not the forward's statistics: normalised by its own
        # sum, p's rows sum to 1 in fp32 and ds's rows to 0 (with the forward's max and sum, scores in the hundreds
        # that a differently ordered dot rounds a few ulps apart left dq 2 % off in fp32 on an H100)
        s = tl.where(agents[None, :] < n, s, float('-inf'))
        p = tl.exp(s - tl.max(s, 1)[:, None])
        p = tl.where(valid, p / tl.sum(p, 1)[:, None], 0.0)
        dp = _dot(do_t, tl.trans(va), IEEE)
        ds = p * (dp - tl.sum(p * dp, 1)[:, None])
        _store_rows(_head(dq_ptr, b, hh, sgb, sgh), sgn, tok, N, d,
                    _dot(ds.to(qt.dtype), a, IEEE) * scale, D_PAD)
        # dA's partial, then (one B * H plane further) dV_A's: the sum over blocks gives both contiguous
        row = part_ptr + ((tb.to(tl.int64) * 2 * B + b) * H + hh) * (N_PAD * D_PAD)
        _store_tile(row, _dot(tl.trans(ds).to(qt.dtype), qt, IEEE) * scale, N_PAD, D_PAD)
        _store_tile(row + B * H * N_PAD * D_PAD, _dot(tl.trans(p).to(qt.dtype), do_t, IEEE), N_PAD, D_PAD)
        if BIAS_GRAD:
            dbias += ds
    if BIAS_GRAD:
        tl.store(dbias_ptr + ((chunk * H + hh).to(tl.int64) * N + tok[:, None]) * N_PAD + agents[None, :], dbias,
                 mask=tok[:, None] < N)


@triton.jit(do_not_specialize=['M', 'B', 'per_chunk'])
def _aggregate_bwd_kernel(a_ptr, sab, sah, san, k_ptr, skb, skh, skm, v_ptr, svb, svh, svm, va_ptr, dva_ptr,
                          stats_ptr, bias_ptr, sbias, dk_ptr, sgkb, sgkh, sgkm, dv_ptr, sgvb, sgvh, sgvm, part_ptr,
                          dbias_ptr, B, H, n, M, d, scale, per_chunk,
                          HAS_BIAS: tl.constexpr, BIAS_GRAD: tl.constexpr, N_PAD: tl.constexpr,
                          D_PAD: tl.constexpr, BLOCK_T: tl.constexpr, IEEE: tl.constexpr):
    """For one block of tokens of one head, over a chunk of the batch: dK, dV, this block's share of dA (partial
    [N_PAD, D_PAD] fp32 per block, batch and head) and, summed over the chunk, dB1."""
    scale = tl.cast(scale, tl.float32)  # (inductor may pass it as an fp64 constant: scores stay fp32)
    tb, hh, chunk, tok, agents = _backward_program(BLOCK_T, N_PAD)
    valid = (agents[:, None] < n) & (tok[None, :] < M)
    if HAS_BIAS:
        bias = _bias_tile(bias_ptr, hh, agents, tok, n, M, sbias)
    dbias = tl.zeros((N_PAD, BLOCK_T), tl.float32)
    for b in range(chunk * per_chunk, tl.minimum(chunk * per_chunk + per_chunk, B)):
        bh = b * H + hh
        kt = _load_rows(_head(k_ptr, b, hh, skb, skh), skm, tok, M, d, D_PAD)
        vt = _load_rows(_head(v_ptr, b, hh, svb, svh), svm, tok, M, d, D_PAD)
        a = _load_rows(_head(a_ptr, b, hh, sab, sah), san, agents, n, d, D_PAD)
        dva = _agent_tile(dva_ptr, bh, N_PAD, D_PAD)
        # sum_t P dP = dV_A . V_A per agent (V_A is the exact output, kept in fp32)
        delta = tl.sum(dva * _agent_tile(va_ptr, bh, N_PAD, D_PAD), 1)
        dva = dva.to(kt.dtype)
        s = _dot(a, tl.trans(kt), IEEE) * scale
        if HAS_BIAS:
            s += bias
        m = tl.load(stats_ptr + tl.cast(bh, tl.int64) * N_PAD + agents)
        l = tl.load(stats_ptr + (B * H + tl.cast(bh, tl.int64)) * N_PAD + agents)
        p = tl.where(valid, tl.exp(s - m[:, None]) / l[:, None], 0.0)
        ds = p * (_dot(dva, tl.trans(vt), IEEE) - delta[:, None])
        _store_rows(_head(dk_ptr, b, hh, sgkb, sgkh), sgkm, tok, M, d,
                    _dot(tl.trans(ds).to(kt.dtype), a, IEEE) * scale, D_PAD)
        _store_rows(_head(dv_ptr, b, hh, sgvb, sgvh), sgvm, tok, M, d,
                    _dot(tl.trans(p).to(kt.dtype), dva, IEEE), D_PAD)
        row = part_ptr + ((tb.to(tl.int64) * B + b) * H + hh) * (N_PAD * D_PAD)
        _store_tile(row, _dot(ds.to(kt.dtype), kt, IEEE) * scale, N_PAD, D_PAD)
        if BIAS_GRAD:
            dbias += ds
    if BIAS_GRAD:
        tl.store(dbias_ptr + ((chunk * H + hh).to(tl.int64) * N_PAD + agents[:, None]) * M + tok[None, :], dbias,
                 mask=tok[None, :] < M)


# ---------------------------------------------------------------------------------------------------- launchers

def _launcher(kernel, traceable: bool):
    """traceable: launch through torch.library.wrap_triton (the registered ops' bodies, which torch.compile traces
    into and inductor then launches itself)."""
    return torch.library.wrap_triton(kernel) if traceable else kernel


def _head_major(B, H, T, d, dtype, device, heads: int = 0) -> torch.Tensor:
    """An empty (B, H, T, d) tensor laid out (B, T, H, d): what the layers reshape to (B, T, H * d) for free; with
    heads, that (B, T, H * d) tensor itself."""
    if heads:
        return torch.empty(B, T, H * d, dtype=dtype, device=device)
    return torch.empty(B, T, H, d, dtype=dtype, device=device).transpose(1, 2)


def forward(q, k, v, agent, agent_bias, query_bias, scale: float, traceable: bool = False, heads: int = 0):
    """-> O (B, H, N, d) in q's dtype, laid out (B, N, H, d), and for the backward: V_A (B, H, N_PAD, D_PAD) fp32 and
    the aggregation's softmax statistics (2, B, H, N_PAD) fp32, max score and sum of exponentials (kept apart, not as
    one log-sum-exp: with scores in the thousands, s - lse in fp32 loses the digits that s - max keeps; the broadcast
    step needs none, its backward recomputes a token's softmax whole). Biases: contiguous (H, n, M) / (H, N, n) or
    None. heads: q, k, v, agent and O are token-major, (B, T, heads * d)."""
    B, H, N, d = _dims(q, heads)
    n, M = _dims(agent, heads)[2], _dims(k, heads)[2]
    common = _constants(d, q.dtype, n)
    n_pad, d_pad, block_t = common['N_PAD'], common['D_PAD'], common['BLOCK_T']
    # aggregation: token blocks split across programs, every split starting inside the tokens
    splits, per_split = _split(triton.cdiv(M, block_t), B * H, q.device, n_pad)
    part = torch.empty(splits, B * H, n_pad * (d_pad + 2), dtype=torch.float32, device=q.device)
    _launcher(_aggregate_fwd_kernel, traceable)[(splits, B * H)](
        agent, *_strides(agent, heads), k, *_strides(k, heads), v, *_strides(v, heads), *_bias_args(agent_bias, q),
        part, H, n, M, d, scale, per_split, HAS_BIAS=agent_bias is not None, **common)
    agent_v = torch.empty(B, H, n_pad, d_pad, dtype=torch.float32, device=q.device)
    stats_agents = torch.empty(2, B, H, n_pad, dtype=torch.float32, device=q.device)
    _launcher(_aggregate_combine_kernel, traceable)[(B * H,)](part, agent_v, stats_agents, splits, B * H,
                                                              N_PAD=n_pad, D_PAD=d_pad, num_warps=4)
    out = _head_major(B, H, N, d, q.dtype, q.device, heads)
    _launcher(_broadcast_fwd_kernel, traceable)[(triton.cdiv(N, block_t), B * H)](
        q, *_strides(q, heads), agent, *_strides(agent, heads), agent_v, *_bias_args(query_bias, q), out,
        *_strides(out, heads), H, n, N, d, scale, HAS_BIAS=query_bias is not None, **common)
    return out, agent_v, stats_agents


def backward(dout, q, k, v, agent, agent_bias, query_bias, agent_v, stats_agents, scale: float,
             bias_grads: tuple[bool, bool] = (True, True), traceable: bool = False, heads: int = 0):
    """-> dq, dk, dv, d agent (dtypes of the inputs; dq, dk, dv laid out (B, T, H, d)), and fp32 d agent_bias
    (H, n, M) and d query_bias (H, N, n), each None where its bias is None or bias_grads says it is not needed.
    heads: dout, q, k, v, agent and their gradients are token-major, as in forward."""
    B, H, N, d = _dims(q, heads)
    n, M = _dims(agent, heads)[2], _dims(k, heads)[2]
    common = _constants(d, q.dtype, n)
    n_pad, d_pad, block_t = common['N_PAD'], common['D_PAD'], common['BLOCK_T']

    blocks = triton.cdiv(N, block_t)
    chunks, per_chunk = _split(B, blocks * H, q.device, n_pad)
    grad_query_bias = query_bias is not None and bias_grads[1]
    dq = _head_major(B, H, N, d, q.dtype, q.device, heads)
    part = torch.empty(blocks, 2, B, H, n_pad, d_pad, dtype=torch.float32, device=q.device)
    dquery_bias = (torch.empty(chunks, H, N, n_pad, dtype=torch.float32, device=q.device) if grad_query_bias
                   else None)
    _launcher(_broadcast_bwd_kernel, traceable)[(blocks, H, chunks)](
        q, *_strides(q, heads), agent, *_strides(agent, heads), agent_v, *_bias_args(query_bias, q), dout,
        *_strides(dout, heads), dq, *_strides(dq, heads), part, part if dquery_bias is None else dquery_bias,
        B, H, n, N, d, scale, per_chunk, HAS_BIAS=query_bias is not None, BIAS_GRAD=grad_query_bias, **common)
    dagent, dagent_v = part.sum(0)

    blocks = triton.cdiv(M, block_t)
    chunks, per_chunk = _split(B, blocks * H, q.device, n_pad)
    grad_agent_bias = agent_bias is not None and bias_grads[0]
    dk = _head_major(B, H, M, d, k.dtype, k.device, heads)
    dv = _head_major(B, H, M, d, v.dtype, v.device, heads)
    part = torch.empty(blocks, B, H, n_pad, d_pad, dtype=torch.float32, device=q.device)
    dagent_bias = (torch.empty(chunks, H, n_pad, M, dtype=torch.float32, device=q.device) if grad_agent_bias
                   else None)
    _launcher(_aggregate_bwd_kernel, traceable)[(blocks, H, chunks)](
        agent, *_strides(agent, heads), k, *_strides(k, heads), v, *_strides(v, heads), agent_v, dagent_v,
        stats_agents, *_bias_args(agent_bias, q), dk, *_strides(dk, heads), dv, *_strides(dv, heads), part,
        part if dagent_bias is None else dagent_bias, B, H, n, M, d, scale, per_chunk,
        HAS_BIAS=agent_bias is not None, BIAS_GRAD=grad_agent_bias, **common)
    dagent = (dagent + part.sum(0))[:, :, :n, :d].to(agent.dtype)
    if heads:
        dagent = dagent.transpose(1, 2).reshape(B, n, H * d)
    return (dq, dk, dv, dagent,
            None if dagent_bias is None else dagent_bias.sum(0)[:, :n],
            None if dquery_bias is None else dquery_bias.sum(0)[..., :n])
