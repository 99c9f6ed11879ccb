"""Triton kernels for focused linear attention: forward state + output passes, query-side and key/value-side
backward passes, each recomputing phi from the raw inputs.

Every program holds a [H_PAD, BLOCK_N, D_PAD] tile: all heads of a token block, because the focusing function
normalises over the full C channels of a token (across heads). The state is per head, (H_PAD, D_PAD, D_PAD), and
every per-head product is one batched 3D dot. Padded lanes load as zero and stay zero through phi.

Numerics: loads are upcast to fp32; the focusing arithmetic runs in fp32 on max-normalised values
(a / max(a), so a^p and its norm cannot overflow whatever the input magnitude); divisions are per token or per
channel reciprocals, not per element. Dots accumulate in fp32; their operands are bf16 for bf16 inputs (the
precision the inputs carry), tf32 for fp16 inputs (phi can exceed fp16's range) and fp32 for fp32 inputs.
Reductions over N are split across (batch, split) programs; the per-split partials are summed afterwards with
torch in a fixed order, so results are deterministic. N is a runtime argument and there is no autotuning: a new
resolution does not recompile.

Set TRITON_INTERPRET=1 before importing this module to run the kernels on CPU tensors (tests do this).
"""
import functools

import torch
import triton
import triton.language as tl

from .._triton import INTERPRET, sm_count
from .layout import state_size, tile_dims

# Launch-parameter overrides for tuning sweeps, {'all' | pass name: {BLOCK_N, num_warps, num_stages,
# splits_per_sm, maxnreg (optional register cap per thread)}}; empty in normal use. Pass names: 'fwd_state',
# 'fwd_out', 'bwd_q', 'bwd_kv'.
CONFIG_OVERRIDE: dict = {}
# When a dict, each launch records {pass name: (registers per thread, spilled registers)} into it (sweeps).
COMPILE_STATS = None

# Launch configurations per pass and per-token tile width H_PAD * D_PAD: (BLOCK_N, num_warps, num_stages,
# splits_per_sm[, maxnreg]), the best per kernel of `tools/benchmark_attention.py --sweep` (BLOCK_N {16, 32, 64} x warps
# {4, 8} x splits/SM {2, 8} x stages {2, 3}) on an H100 in bf16; widths 64, 128, 256 = PVT-T stage 1 and Swin-T
# stages 1 and 2. A batched dot puts one warp per head (see _dot), so 4 heads want 4 warps and 8 heads 8; the
# backward passes keep more tiles live and want fewer tokens per program. Swin-T stage 1's key/value backward
# ran 11 % faster capped at 168 registers per thread (3 programs per SM instead of 2, a few spills); the other
# passes, and width 256, ran slower capped (session-4 sweep of caps 168 / 128 / 96 on Swin-T stages 1 and 2).
# The forward state pass of widths 128 and 256 takes 2 splits per SM, not 8: every split writes a whole fp32 state
# (17 KB at width 128) that is then summed, which at batch 1 cost more than the tokens (session 7, graph replay of
# the forward: Swin-T stage 1 at 1024x1024 80.6 -> 67.1 us, stage 2 73.4 -> 52.4, 2048x2048 188.4 -> 179.3, the
# benchmark's batch-128 stage 1 257.0 -> 243.2, the detection-size stage 1 121.2 -> 102.2). Width 128's state pass
# runs unpipelined (1 stage): its tiles then load straight into registers instead of through shared memory, the
# resource it is bound by (ncu, session 4); 0.159 -> 0.146 ms at Swin-T stage 1 (session 25 sweep, H100; the other
# passes were slower with 1 stage).
_TUNED = {
    64: {'fwd_state': (64, 4, 3, 8), 'fwd_out': (32, 4, 3, 8), 'bwd_q': (32, 4, 3, 8), 'bwd_kv': (16, 4, 3, 8)},
    128: {'fwd_state': (32, 4, 1, 2), 'fwd_out': (16, 4, 3, 8), 'bwd_q': (16, 4, 3, 8), 'bwd_kv': (16, 4, 3, 8, 168)},
    256: {'fwd_state': (16, 4, 3, 2), 'fwd_out': (16, 8, 3, 2), 'bwd_q': (16, 8, 3, 2), 'bwd_kv': (16, 8, 3, 2)},
    512: {'fwd_state': (16, 8, 2, 4), 'fwd_out': (16, 8, 2, 4), 'bwd_q': (16, 8, 2, 4), 'bwd_kv': (16, 8, 2, 4)},
}


def _launch_config(name: str, num_heads: int, head_dim: int, N, B, device, fp32: bool = False) -> dict:
    """The pass's launch configuration for this shape (a shared dict: do not modify). Cached per shape, so a
    training step pays for it once; CONFIG_OVERRIDE bypasses the cache. N and B may be SymInts (torch.compile with
    dynamic shapes: a second batch size marks the batch dynamic): the grid is then a symbolic expression of them,
    built anew while tracing (never cached, never specialized)."""
    sms = sm_count(device)
    if CONFIG_OVERRIDE or not (isinstance(N, int) and isinstance(B, int)):
        return _build_config(name, num_heads, head_dim, N, B, sms, fp32)
    return _cached_config(name, num_heads, head_dim, N, B, sms, fp32)


def _pass_config(name, num_heads, head_dim, fp32):
    """The shape-free part: tile, warps, stages, splits per SM, register cap."""
    h_pad, d_pad = tile_dims(num_heads, head_dim)
    width = min(512, max(64, h_pad * d_pad))
    block_n, num_warps, num_stages, splits_per_sm, *maxnreg = _TUNED[width][name]
    cfg = dict(BLOCK_N=block_n, num_warps=num_warps, splits_per_sm=splits_per_sm,
               # fp32 dot operands take twice the shared memory per pipeline stage
               num_stages=2 if fp32 else num_stages)
    if maxnreg and not fp32:  # (the caps were measured in bf16)
        cfg['maxnreg'] = maxnreg[0]
    if 1 < h_pad < num_warps:
        # a batched dot puts its warps on the head axis only: warps beyond the heads would repeat their products
        cfg['num_warps'] = h_pad
    cfg.update(CONFIG_OVERRIDE.get('all', {}))
    cfg.update(CONFIG_OVERRIDE.get(name, {}))
    if INTERPRET:
        cfg['BLOCK_N'] = 16  # fewer wasted rows in the (slow) interpreter at the tiny test sizes
    cfg.update(H_PAD=h_pad, D_PAD=d_pad, STATE=state_size(num_heads, head_dim))
    return cfg


def _with_grid(cfg, N, B, sms):
    """cfg plus the (batch, split) grid for N tokens and batch B: enough programs to fill the chip a few times
    over, each split covering whole blocks. Plain or symbolic integers (sym_min / sym_max do not guard). With a
    symbolic N (torch.compile at changing image sizes) the split count does not depend on N, and splits past the
    last block are left empty (they write zero partials): N's nested divisions in the partial buffer's size and
    the reduction over it stopped torch 2.11's inductor twice (a self-copy of that buffer, pytorch#189271, then
    "vr must not be None" for one of its precomputed sizes; session 22, H100)."""
    cfg = dict(cfg)
    n_blocks = triton.cdiv(N, cfg['BLOCK_N'])
    splits = triton.cdiv(int(cfg.pop('splits_per_sm') * sms), B)
    follow_tokens = _splits_follow_tokens(n_blocks)
    if follow_tokens:
        splits = torch.sym_min(n_blocks, splits)
    splits = torch.sym_max(1, splits)
    blocks_per_split = triton.cdiv(n_blocks, splits)
    if follow_tokens:  # no split without a block
        splits = triton.cdiv(n_blocks, blocks_per_split)
    cfg.update(n_blocks=n_blocks, blocks_per_split=blocks_per_split, splits=splits)
    return cfg


def _splits_follow_tokens(n_blocks) -> bool:
    """Whether the split count may depend on the token count (not while N is symbolic; see _with_grid)."""
    return not isinstance(n_blocks, torch.SymInt)


def _build_config(name, num_heads, head_dim, N, B, sms, fp32):
    return _with_grid(_pass_config(name, num_heads, head_dim, fp32), N, B, sms)


_cached_config = functools.lru_cache(maxsize=1024)(_build_config)


def _pow_int(p: float) -> int:
    """p as a small integer (exact repeated multiplication in the kernels), or 0 for the exp2/log2 path."""
    return int(p) if float(p).is_integer() and 1 <= p <= 8 else 0


def _dot_mode(dtype: torch.dtype) -> int:
    """0: bf16 operands (bf16 inputs); 1: tf32 (fp16 inputs: phi may exceed fp16's range); 2: fp32 products."""
    return {torch.bfloat16: 0, torch.float16: 1}.get(dtype, 2)


# ----------------------------------------------------------------------------------------------- device helpers

@triton.jit
def _tile_offsets(row0, N, C, HEAD_DIM, H, BLOCK_N: tl.constexpr, H_PAD: tl.constexpr, D_PAD: tl.constexpr):
    """Token rows [1, BLOCK_N, 1], offsets into a contiguous (N, C) tile [H_PAD, BLOCK_N, D_PAD], and its mask.
    Row-strided inputs (q, k, v slices of one qkv tensor) address rows * row_stride + chan instead."""
    offs_h = tl.arange(0, H_PAD)[:, None, None]
    offs_n = row0 + tl.arange(0, BLOCK_N)[None, :, None]
    offs_d = tl.arange(0, D_PAD)[None, None, :]
    chan = offs_h * HEAD_DIM + offs_d
    chan_ok = (offs_h < H) & (offs_d < HEAD_DIM)
    return offs_n, chan, offs_n * C + chan, chan_ok & (offs_n < N)


@triton.jit
def _scale_factors(scale_ptr, HEAD_DIM, H, H_PAD: tl.constexpr, D_PAD: tl.constexpr):
    """From the raw scale parameter: 1 / softplus(scale) per channel as [H_PAD, 1, D_PAD], and as [H_PAD, D_PAD]
    the factor -softplus'(scale) / softplus(scale) that turns sum_n dL/da * a into dL/d scale (padded lanes: 1 and
    0; their inputs load as zero). softplus as torch computes it: x above 20, else log1p(exp(x))."""
    offs_h = tl.arange(0, H_PAD)[:, None]
    offs_d = tl.arange(0, D_PAD)[None, :]
    valid = (offs_h < H) & (offs_d < HEAD_DIM)
    x = tl.load(scale_ptr + offs_h * HEAD_DIM + offs_d, mask=valid, other=0.0).to(tl.float32)
    e = tl.exp(tl.minimum(x, 20.0))
    u = 1.0 + e
    # log1p(e) to full precision where 1 + e rounds (e below fp32 epsilon for very negative scales)
    log1p_e = tl.where(u == 1.0, e, tl.log(u) * (e / (u - 1.0)))
    big = x > 20.0
    inv_s = tl.where(valid, 1.0 / tl.where(big, x, log1p_e), 1.0)
    slope = tl.where(big, 1.0, e / u)
    return inv_s[:, None, :], tl.where(valid, -inv_s * slope, 0.0)


@triton.jit
def _token_sum(x):
    """Sum over heads and head dims: [H, N, D] -> [1, N, 1]."""
    return tl.sum(tl.sum(x, axis=2, keep_dims=True), axis=0, keep_dims=True)


@triton.jit
def _token_max(x):
    return tl.max(tl.max(x, axis=2, keep_dims=True), axis=0, keep_dims=True)


@triton.jit
def _pow_m1(ah, P: tl.constexpr, P_INT: tl.constexpr):
    """ah^(p-1) for ah in [0, 1]."""
    if P_INT > 0:
        r = tl.full(ah.shape, 1.0, tl.float32)
        for _ in tl.static_range(P_INT - 1):
            r = r * ah
    else:
        # (the interpreter evaluates exp2/log2 in fp64: pin the dtype)
        r = tl.where(ah > 0, tl.exp2(tl.log2(tl.maximum(ah, 1e-30)) * (P - 1.0)), 0.0).to(tl.float32)
    return r


@triton.jit
def _focus(x, inv_s, valid, P: tl.constexpr, P_INT: tl.constexpr):
    """Focusing function on a tile, in max-normalised form: a = (relu(x) + eps) / s, A = max_c a, ah = a / A,
    bh = ah^p; phi = bh * A * ||ah|| / ||bh||. Returns phi and the per-token pieces the backward needs."""
    a = tl.where(valid, (tl.maximum(x, 0.0) + 1e-6) * inv_s, 0.0)
    amax = _token_max(a)
    amax = tl.where(amax > 0, amax, 1.0)
    ah = a * (1.0 / amax)
    bh = _pow_m1(ah, P, P_INT) * ah
    n1 = tl.sqrt(_token_sum(ah * ah))
    n2 = tl.sqrt(_token_sum(bh * bh))
    n1 = tl.where(n1 > 0, n1, 1.0)
    n2 = tl.where(n2 > 0, n2, 1.0)
    return bh * (amax * n1 / n2), ah, amax, n1, n2


@triton.jit
def _focus_backward(g_phi, x, inv_s, ah, amax, n1, n2, P: tl.constexpr, P_INT: tl.constexpr):
    """Gradient of phi w.r.t. the raw input x, and dL/da * a (summed over tokens later for d softplus(scale))."""
    ah_pm1 = _pow_m1(ah, P, P_INT)
    bh = ah_pm1 * ah
    ch = _token_sum(g_phi * bh)
    inv_n2 = 1.0 / n2
    g_a = (P * n1 * inv_n2) * ah_pm1 * (g_phi - (ch * inv_n2 * inv_n2) * bh) + (ch * inv_n2 / n1) * ah
    g_x = tl.where(x > 0, g_a * inv_s, 0.0)
    return g_x, g_a * ah * amax


@triton.jit
def _mma(a, b, acc, DOT_MODE: tl.constexpr):
    if DOT_MODE == 0:
        return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16), acc)
    elif DOT_MODE == 1:
        return tl.dot(a, b, acc, input_precision='tf32')
    else:
        return tl.dot(a, b, acc, input_precision='ieee')


@triton.jit
def _dot(a, b, DOT_MODE: tl.constexpr):
    """Per-head product of [H_PAD, M, K] and [H_PAD, K, N]. Triton lays a batched (3D) dot out with every warp on
    the batch axis, so with one head all warps would compute the same product: one head runs as a 2D dot, which
    the warps split between them."""
    if a.shape[0] == 1:
        r = _mma(tl.reshape(a, (a.shape[1], a.shape[2])), tl.reshape(b, (b.shape[1], b.shape[2])), None, DOT_MODE)
        return tl.reshape(r, (1, a.shape[1], b.shape[2]))
    else:
        return _mma(a, b, None, DOT_MODE)


@triton.jit
def _dot_acc(a, b, acc, DOT_MODE: tl.constexpr):
    """acc + _dot(a, b), accumulating inside the tensor-core instruction where the layout allows."""
    if a.shape[0] == 1:
        return acc + _dot(a, b, DOT_MODE)
    else:
        return _mma(a, b, acc, DOT_MODE)


@triton.jit
def _dot_operand(x, DOT_MODE: tl.constexpr):
    """A loop-invariant dot operand (the state) in the dot's operand dtype, converted once before the loop."""
    if DOT_MODE == 0:
        return x.to(tl.bfloat16)
    else:
        return x


@triton.jit
def _transpose_last(x):
    return tl.permute(x, (0, 2, 1))


@triton.jit
def _state_offsets(H_PAD: tl.constexpr, D_PAD: tl.constexpr):
    """Offsets of the (H_PAD, D_PAD, D_PAD) matrix and, after it, the (H_PAD, D_PAD) vector in one state row (the
    kernels' STATE = layout.state_size values)."""
    offs_h = tl.arange(0, H_PAD)[:, None, None]
    offs_i = tl.arange(0, D_PAD)[None, :, None]
    offs_j = tl.arange(0, D_PAD)[None, None, :]
    offs_vec = H_PAD * D_PAD * D_PAD + tl.arange(0, H_PAD)[:, None] * D_PAD + tl.arange(0, D_PAD)[None, :]
    return (offs_h * D_PAD + offs_i) * D_PAD + offs_j, offs_vec


@triton.jit
def _load_state(row_ptr, H_PAD: tl.constexpr, D_PAD: tl.constexpr):
    """A state row: per-head (H_PAD, D_PAD, D_PAD) matrix and (H_PAD, D_PAD) vector."""
    offs_mat, offs_vec = _state_offsets(H_PAD, D_PAD)
    return tl.load(row_ptr + offs_mat), tl.load(row_ptr + offs_vec)


@triton.jit
def _store_state(row_ptr, mat, vec, H_PAD: tl.constexpr, D_PAD: tl.constexpr):
    offs_mat, offs_vec = _state_offsets(H_PAD, D_PAD)
    tl.store(row_ptr + offs_mat, mat)
    tl.store(row_ptr + offs_vec, vec)


@triton.jit
def _channel_offsets(HEAD_DIM, H, H_PAD: tl.constexpr, D_PAD: tl.constexpr):
    """[H_PAD, D_PAD] channel index h * HEAD_DIM + j of a per-channel vector, and its mask."""
    offs_h = tl.arange(0, H_PAD)[:, None]
    offs_d = tl.arange(0, D_PAD)[None, :]
    return offs_h * HEAD_DIM + offs_d, (offs_h < H) & (offs_d < HEAD_DIM)


# ----------------------------------------------------------------------------------------------------- kernels

# Token counts and loop bounds are plain runtime integers: Triton would otherwise compile a variant per divisibility
# class of each (N % 16, == 1, ...), so a new resolution could recompile. Strides and C stay specialized: their
# divisibility is what lets the compiler prove aligned, vectorized loads.
_resolution_free_jit = triton.jit(do_not_specialize=['N', 'blocks_per_split', 'n_blocks'])


@_resolution_free_jit
def _fwd_state_kernel(
        k_ptr, k_sb, k_sn, v_ptr, v_sb, v_sn, pos_ptr, scale_ptr, part_ptr,
        N, C, HEAD_DIM, H, blocks_per_split, n_blocks,
        HAS_POS: tl.constexpr, P: tl.constexpr, P_INT: tl.constexpr, DOT_MODE: tl.constexpr,
        BLOCK_N: tl.constexpr, H_PAD: tl.constexpr, D_PAD: tl.constexpr, STATE: tl.constexpr):
    """Per (batch, split): the split's share of the state, sum_n phi(k)_n^T v_n / N and sum_n phi(k)_n / N."""
    b = tl.program_id(0)
    split = tl.program_id(1)
    k_ptr += b.to(tl.int64) * k_sb
    v_ptr += b.to(tl.int64) * v_sb
    inv_s, _ = _scale_factors(scale_ptr, HEAD_DIM, H, H_PAD, D_PAD)
    kv = tl.zeros((H_PAD, D_PAD, D_PAD), dtype=tl.float32)
    ksum = tl.zeros((H_PAD, D_PAD), dtype=tl.float32)
    for blk in range(split * blocks_per_split, tl.minimum((split + 1) * blocks_per_split, n_blocks)):
        rows, chan, offs, valid = _tile_offsets(blk * BLOCK_N, N, C, HEAD_DIM, H, BLOCK_N, H_PAD, D_PAD)
        k = tl.load(k_ptr + rows * k_sn + chan, mask=valid, other=0.0).to(tl.float32)
        if HAS_POS:
            k += tl.load(pos_ptr + offs, mask=valid, other=0.0).to(tl.float32)
        v = tl.load(v_ptr + rows * v_sn + chan, mask=valid, other=0.0)
        phi, ah, amax, n1, n2 = _focus(k, inv_s, valid, P, P_INT)
        kv = _dot_acc(_transpose_last(phi), v.to(tl.float32), kv, DOT_MODE)
        ksum += tl.sum(phi, axis=1)
    row = (b * tl.num_programs(1) + split).to(tl.int64) * STATE
    # 1/N here, not a float argument (N may be symbolic under torch.compile); `1.0 / N`, not N.to(): torch 2.11's
    # mutation analysis builds this kernel with N a Python int (tests/ops/test_focused_linear_trace.py)
    inv_n = 1.0 / N
    _store_state(part_ptr + row, kv * inv_n, ksum * inv_n, H_PAD, D_PAD)


@_resolution_free_jit
def _fwd_out_kernel(
        q_ptr, q_sb, q_sn, scale_ptr, state_ptr, out_ptr,
        N, C, HEAD_DIM, H, blocks_per_split, n_blocks,
        P: tl.constexpr, P_INT: tl.constexpr, DOT_MODE: tl.constexpr,
        BLOCK_N: tl.constexpr, H_PAD: tl.constexpr, D_PAD: tl.constexpr, STATE: tl.constexpr):
    """Per (batch, split): out = phi(q) kv / (phi(q) . kmean + eps) for the split's token blocks, all heads."""
    b = tl.program_id(0)
    split = tl.program_id(1)
    base = b.to(tl.int64) * N * C
    q_ptr += b.to(tl.int64) * q_sb
    inv_s, _ = _scale_factors(scale_ptr, HEAD_DIM, H, H_PAD, D_PAD)
    kv, kmean = _load_state(state_ptr + b.to(tl.int64) * STATE, H_PAD, D_PAD)
    kv = _dot_operand(kv, DOT_MODE)
    kmean = kmean[:, None, :]
    for blk in range(split * blocks_per_split, tl.minimum((split + 1) * blocks_per_split, n_blocks)):
        rows, chan, offs, valid = _tile_offsets(blk * BLOCK_N, N, C, HEAD_DIM, H, BLOCK_N, H_PAD, D_PAD)
        q = tl.load(q_ptr + rows * q_sn + chan, mask=valid, other=0.0).to(tl.float32)
        phi, ah, amax, n1, n2 = _focus(q, inv_s, valid, P, P_INT)
        inv_den = 1.0 / (tl.sum(phi * kmean, axis=2, keep_dims=True) + 1e-6)
        out = _dot(phi, kv, DOT_MODE) * inv_den
        tl.store(out_ptr + base + offs, out.to(out_ptr.dtype.element_ty), mask=valid)


@_resolution_free_jit
def _bwd_q_kernel(
        q_ptr, q_sb, q_sn, dout_ptr, scale_ptr, state_ptr, dq_ptr, part_ptr,
        N, C, HEAD_DIM, H, blocks_per_split, n_blocks,
        P: tl.constexpr, P_INT: tl.constexpr, DOT_MODE: tl.constexpr,
        BLOCK_N: tl.constexpr, H_PAD: tl.constexpr, D_PAD: tl.constexpr, STATE: tl.constexpr):
    """Query side: dq, and the split's share of d(kv) / N = sum phi(q)^T g / N, d(kmean) / N = sum dden phi(q) / N
    and of the query side's dL/d scale (one partial row: state layout, then C channels)."""
    b = tl.program_id(0)
    split = tl.program_id(1)
    base = b.to(tl.int64) * N * C
    q_ptr += b.to(tl.int64) * q_sb
    inv_s, dscale_factor = _scale_factors(scale_ptr, HEAD_DIM, H, H_PAD, D_PAD)
    kv, kmean = _load_state(state_ptr + b.to(tl.int64) * STATE, H_PAD, D_PAD)
    kv_t = _dot_operand(_transpose_last(kv), DOT_MODE)
    kmean = kmean[:, None, :]
    dkv = tl.zeros((H_PAD, D_PAD, D_PAD), dtype=tl.float32)
    dkmean = tl.zeros((H_PAD, D_PAD), dtype=tl.float32)
    ds = tl.zeros((H_PAD, D_PAD), dtype=tl.float32)
    for blk in range(split * blocks_per_split, tl.minimum((split + 1) * blocks_per_split, n_blocks)):
        rows, chan, offs, valid = _tile_offsets(blk * BLOCK_N, N, C, HEAD_DIM, H, BLOCK_N, H_PAD, D_PAD)
        q = tl.load(q_ptr + rows * q_sn + chan, mask=valid, other=0.0).to(tl.float32)
        dout = tl.load(dout_ptr + base + offs, mask=valid, other=0.0).to(tl.float32)
        phi, ah, amax, n1, n2 = _focus(q, inv_s, valid, P, P_INT)
        inv_den = 1.0 / (tl.sum(phi * kmean, axis=2, keep_dims=True) + 1e-6)
        g = dout * inv_den
        g_kv = _dot(g, kv_t, DOT_MODE)
        # d(den) = -sum_j g_j out_j with out = phi kv / den; sum_j g_j (phi kv)_j = phi . (g kv^T): no second dot
        dden = -tl.sum(phi * g_kv, axis=2, keep_dims=True) * inv_den
        g_phi = g_kv + dden * kmean
        dkv = _dot_acc(_transpose_last(phi), g, dkv, DOT_MODE)
        dkmean += tl.sum(dden * phi, axis=1)
        dq, ga_a = _focus_backward(g_phi, q, inv_s, ah, amax, n1, n2, P, P_INT)
        tl.store(dq_ptr + base + offs, dq.to(dq_ptr.dtype.element_ty), mask=valid)
        ds += tl.sum(ga_a, axis=1)
    row = part_ptr + (b * tl.num_programs(1) + split).to(tl.int64) * (STATE + C)
    inv_n = 1.0 / N
    _store_state(row, dkv * inv_n, dkmean * inv_n, H_PAD, D_PAD)
    chan_vec, chan_ok = _channel_offsets(HEAD_DIM, H, H_PAD, D_PAD)
    tl.store(row + STATE + chan_vec, ds * dscale_factor, mask=chan_ok)


@_resolution_free_jit
def _bwd_kv_kernel(
        k_ptr, k_sb, k_sn, v_ptr, v_sb, v_sn, pos_ptr, scale_ptr, qgrad_ptr, dk_ptr, dv_ptr, part_ptr,
        N, C, HEAD_DIM, H, blocks_per_split, n_blocks,
        HAS_POS: tl.constexpr, P: tl.constexpr, P_INT: tl.constexpr, DOT_MODE: tl.constexpr,
        BLOCK_N: tl.constexpr, H_PAD: tl.constexpr, D_PAD: tl.constexpr, STATE: tl.constexpr):
    """Key/value side, given the query side's row per batch (d(kv) / N, d(kmean) / N, its dL/d scale): dk, dv and
    the split's share of dL/d scale over C channels (the query side's added once per batch, by split 0)."""
    b = tl.program_id(0)
    split = tl.program_id(1)
    base = b.to(tl.int64) * N * C
    k_ptr += b.to(tl.int64) * k_sb
    v_ptr += b.to(tl.int64) * v_sb
    inv_s, dscale_factor = _scale_factors(scale_ptr, HEAD_DIM, H, H_PAD, D_PAD)
    qgrad_ptr += b.to(tl.int64) * (STATE + C)
    dkv, dkmean = _load_state(qgrad_ptr, H_PAD, D_PAD)
    dkv_t = _dot_operand(_transpose_last(dkv), DOT_MODE)
    dkv = _dot_operand(dkv, DOT_MODE)
    dkmean = dkmean[:, None, :]
    ds = tl.zeros((H_PAD, D_PAD), dtype=tl.float32)
    for blk in range(split * blocks_per_split, tl.minimum((split + 1) * blocks_per_split, n_blocks)):
        rows, chan, offs, valid = _tile_offsets(blk * BLOCK_N, N, C, HEAD_DIM, H, BLOCK_N, H_PAD, D_PAD)
        k = tl.load(k_ptr + rows * k_sn + chan, mask=valid, other=0.0).to(tl.float32)
        if HAS_POS:
            k += tl.load(pos_ptr + offs, mask=valid, other=0.0).to(tl.float32)
        v = tl.load(v_ptr + rows * v_sn + chan, mask=valid, other=0.0).to(tl.float32)
        phi, ah, amax, n1, n2 = _focus(k, inv_s, valid, P, P_INT)
        dv = _dot(phi, dkv, DOT_MODE)
        tl.store(dv_ptr + base + offs, dv.to(dv_ptr.dtype.element_ty), mask=valid)
        g_phi = _dot(v, dkv_t, DOT_MODE) + dkmean
        dk, ga_a = _focus_backward(g_phi, k, inv_s, ah, amax, n1, n2, P, P_INT)
        tl.store(dk_ptr + base + offs, dk.to(dk_ptr.dtype.element_ty), mask=valid)
        ds += tl.sum(ga_a, axis=1)
    chan_vec, chan_ok = _channel_offsets(HEAD_DIM, H, H_PAD, D_PAD)
    ds = ds * dscale_factor
    if split == 0:
        ds += tl.load(qgrad_ptr + STATE + chan_vec, mask=chan_ok, other=0.0)
    tl.store(part_ptr + (b * tl.num_programs(1) + split).to(tl.int64) * C + chan_vec, ds, mask=chan_ok)


# ---------------------------------------------------------------------------------------------------- launchers

def _launch(name, kernel, x, num_heads, args, partial_size=0, traceable=False, **constexprs):
    """Launch `kernel` on a (batch, split) grid with the pass's configuration. With partial_size, the kernel
    takes (after args) a fresh fp32 (B, splits, partial_size) buffer of per-split partials, which is returned.
    traceable: launch through torch.library.wrap_triton (the registered ops' body, which torch.compile traces into
    and inductor then launches itself); such a launch takes no register cap (wrap_triton passes only warps and
    stages), so the capped pass runs uncapped there."""
    B, N, C = x.shape
    head_dim = C // num_heads
    cfg = _launch_config(name, num_heads, head_dim, N, B, x.device, x.dtype == torch.float32)
    # flat: a (B, splits, partial_size) buffer's fake strides say Max(1, splits) where inductor's say splits, and
    # torch 2.11 then copied the buffer onto itself after the kernel wrote it (pytorch#189271)
    part = x.new_empty(B * cfg['splits'] * partial_size, dtype=torch.float32) if partial_size else None
    options = dict(num_warps=cfg['num_warps'], num_stages=cfg['num_stages'])
    if cfg.get('maxnreg') and not traceable:
        options['maxnreg'] = cfg['maxnreg']
    launcher = torch.library.wrap_triton(kernel) if traceable else kernel
    compiled = launcher[(B, cfg['splits'])](
        *args, *(() if part is None else (part,)), N, C, head_dim, num_heads,
        cfg['blocks_per_split'], cfg['n_blocks'], BLOCK_N=cfg['BLOCK_N'], H_PAD=cfg['H_PAD'], D_PAD=cfg['D_PAD'],
        STATE=cfg['STATE'], **options, **constexprs)
    if COMPILE_STATS is not None and not INTERPRET and not traceable:
        COMPILE_STATS[name] = (compiled.n_regs, compiled.n_spills)
    return None if part is None else part.view(B, cfg['splits'], partial_size)


def _meta(q, focusing_factor: float) -> dict:
    """Compile-time constants of every pass: the focusing power and the dot operand precision."""
    return dict(P=float(focusing_factor), P_INT=_pow_int(focusing_factor), DOT_MODE=_dot_mode(q.dtype))


def forward(q, k, v, scale, pos, num_heads: int, focusing_factor: float, traceable: bool = False):
    """Returns out (B, N, C) in v's dtype (contiguous) and the fp32 state (B, state_size): kv / N, then kmean, in
    the padded layout of layout.state_size. q, k, v (B, N, C) with unit channel stride (any batch and token strides,
    e.g. slices of one qkv tensor); scale: the raw fp32 (C,) parameter; pos contiguous (N, C) or None.
    traceable: see _launch."""
    meta = dict(_meta(q, focusing_factor), traceable=traceable)
    part = _launch('fwd_state', _fwd_state_kernel, q, num_heads,
                   (k, *k.stride()[:2], v, *v.stride()[:2], pos if pos is not None else k, scale),
                   state_size(num_heads, q.shape[2] // num_heads), HAS_POS=pos is not None, **meta)
    state = part.sum(1)
    out = torch.empty(q.shape, dtype=v.dtype, device=v.device)
    _launch('fwd_out', _fwd_out_kernel, q, num_heads, (q, *q.stride()[:2], scale, state, out), **meta)
    return out, state


def backward(dout, q, k, v, scale, pos, state, num_heads: int, focusing_factor: float, traceable: bool = False):
    """Returns dq, dk, dv (dtypes of q, k, v) and dL/d scale (the raw parameter) as fp32 (C,)."""
    C = q.shape[2]
    meta = dict(_meta(q, focusing_factor), traceable=traceable)
    dq, dk, dv = (torch.empty(q.shape, dtype=t.dtype, device=t.device) for t in (q, k, v))
    part = _launch('bwd_q', _bwd_q_kernel, q, num_heads, (q, *q.stride()[:2], dout, scale, state, dq),
                   state_size(num_heads, C // num_heads) + C, **meta)
    part = _launch('bwd_kv', _bwd_kv_kernel, q, num_heads,
                   (k, *k.stride()[:2], v, *v.stride()[:2], pos if pos is not None else k, scale, part.sum(1),
                    dk, dv), C, HAS_POS=pos is not None, **meta)
    return dq, dk, dv, part.sum((0, 1))
