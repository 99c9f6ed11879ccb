"""Triton kernels for focused linear attention: forward state + output passes, query-side and key/value-side
backward passes, each recomputing phi from the raw inputs.

Every program holds a token block of ALL heads, because the focusing function normalises over the full C channels
of a token (across heads). Two layouts (layout.py chooses):
- flat (C_PAD <= 64, or 128 with a power-of-two head dim): a [BLOCK_N, C_PAD] tile and a block-diagonal
  (C_PAD, C_PAD) state; per-head products are 2D dots, per-head sums a reshape or a dot with the block mask;
- per-head: a [H_PAD, BLOCK_N, D_PAD] tile and an (H_PAD, D_PAD, D_PAD) state with batched 3D dots.
Padded lanes are masked on load and forced to zero before anything is accumulated.

Numerics: loads are upcast to fp32, the focusing arithmetic runs in fp32 on max-normalised values
(a / max(a), so a^p and its norm cannot overflow whatever the input magnitude), dots accumulate in fp32
(tf32 operands for half inputs, plain fp32 products for fp32 inputs). Reductions over N are split across
(batch, split) programs; the per-split partials are summed afterwards with torch in a fixed order, so results
are deterministic. N is a runtime argument and there is no autotuning: a new resolution does not recompile.

Set TRITON_INTERPRET=1 before importing this module to run the kernels on CPU tensors (tests do this).
"""
import functools
import os

import torch
import triton
import triton.language as tl

from .layout import next_pow2, state_shapes, tile_dims, uses_flat_layout

INTERPRET = os.environ.get('TRITON_INTERPRET', '0') == '1'
# Launch-parameter overrides (BLOCK_N, num_warps, splits_per_sm) for tuning sweeps; empty in normal use.
CONFIG_OVERRIDE: dict = {}


@functools.lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _launch_config(num_heads: int, head_dim: int, N: int, B: int, device, backward: bool = False) -> dict:
    flat = uses_flat_layout(num_heads, head_dim)
    h_pad, d_pad = tile_dims(num_heads, head_dim)
    c_pad = max(16, next_pow2(num_heads * head_dim)) if flat else h_pad * d_pad
    state = c_pad * c_pad if flat else h_pad * d_pad * d_pad
    # keep a token tile around 4-8K fp32 values per program
    block_n = max(16, min(64, 8192 // c_pad))
    num_warps = 4 if max(state, block_n * c_pad) <= 8192 else 8
    if c_pad >= 128 and (backward or not flat):
        # best of BLOCK_N x warps sweeps on Swin-T stage 1 (H100): the backward passes hold more live tiles and
        # do best at 32 tokens for either layout; the flat forward does best at 64 (the default above)
        block_n, num_warps = 32, 8
    if INTERPRET:
        block_n = 16  # fewer wasted rows in the (slow) interpreter at the tiny test sizes
    # two fp32 (C_PAD, C_PAD) state operands live in shared memory at C_PAD = 128: keep load pipelining shallow
    num_stages = 2 if state >= 128 * 128 else 3
    block_n = CONFIG_OVERRIDE.get('BLOCK_N', block_n)
    num_warps = CONFIG_OVERRIDE.get('num_warps', num_warps)
    num_stages = CONFIG_OVERRIDE.get('num_stages', num_stages)
    n_blocks = triton.cdiv(N, block_n)
    sms = _sm_count(device.index if device.index is not None else torch.cuda.current_device()) \
        if device.type == 'cuda' else 4
    # enough (batch, split) programs to fill the chip a few times over; each split covers whole blocks
    programs = CONFIG_OVERRIDE.get('splits_per_sm', 2) * sms
    splits = max(1, min(n_blocks, triton.cdiv(programs, B)))
    blocks_per_split = triton.cdiv(n_blocks, splits)
    splits = triton.cdiv(n_blocks, blocks_per_split)
    seg = head_dim if head_dim == next_pow2(head_dim) else 0
    return dict(flat=flat, SEG=seg, C_PAD=c_pad, H_PAD=h_pad, D_PAD=d_pad, BLOCK_N=block_n, num_warps=num_warps,
                num_stages=num_stages,
                n_blocks=n_blocks, splits=splits, blocks_per_split=blocks_per_split)


def _pow_int(p: float) -> int:
    """p as a small integer (exact repeated multiplication in the kernels), or 0 for the exp2/log2 path."""
    return int(p) if float(p).is_integer() and 1 <= p <= 8 else 0


# ----------------------------------------------------------------------------------------------- device helpers

@triton.jit
def _tile_offsets(row0, N, C, HEAD_DIM, H, BLOCK_N: tl.constexpr, H_PAD: tl.constexpr, D_PAD: tl.constexpr):
    offs_h = tl.arange(0, H_PAD)[:, None, None]
    offs_n = row0 + tl.arange(0, BLOCK_N)[None, :, None]
    offs_d = tl.arange(0, D_PAD)[None, None, :]
    chan = offs_h * HEAD_DIM + offs_d
    chan_ok = (offs_h < H) & (offs_d < HEAD_DIM)
    valid = chan_ok & (offs_n < N)
    return offs_n * C + chan, chan, chan_ok, valid


@triton.jit
def _token_sum(x):
    """Sum over heads and head dims: [H, N, D] -> [1, N, 1]."""
    return tl.sum(tl.sum(x, axis=2, keep_dims=True), axis=0, keep_dims=True)


@triton.jit
def _token_max(x):
    return tl.max(tl.max(x, axis=2, keep_dims=True), axis=0, keep_dims=True)


@triton.jit
def _focus_parts(x, s, valid, P: tl.constexpr, P_INT: tl.constexpr):
    """Focusing function on a tile, in max-normalised form.

    a = (relu(x) + eps) / s, A = max_c a, ah = a / A, bh = ah^p; phi = bh * A * ||ah|| / ||bh||.
    Returns phi and the pieces the backward needs.
    """
    a = tl.where(valid, (tl.maximum(x, 0.0) + 1e-6) / s, 0.0)
    amax = _token_max(a)
    amax = tl.where(amax > 0, amax, 1.0)
    ah = a / amax
    if P_INT > 0:
        bh = ah
        for _ in tl.static_range(P_INT - 1):
            bh = bh * ah
    else:
        # (the interpreter evaluates exp2/log2 in fp64: pin the dtype)
        bh = tl.where(ah > 0, tl.exp2(tl.log2(tl.maximum(ah, 1e-30)) * P), 0.0).to(tl.float32)
    n1 = tl.sqrt(_token_sum(ah * ah))
    n2 = tl.sqrt(_token_sum(bh * bh))
    n1 = tl.where(n1 > 0, n1, 1.0)
    n2 = tl.where(n2 > 0, n2, 1.0)
    phi = bh * (amax * n1 / n2)
    return phi, ah, bh, amax, n1, n2


@triton.jit
def _focus_backward(g_phi, x, s, valid, ah, bh, amax, n1, n2, P: tl.constexpr):
    """Gradient of phi w.r.t. the raw input x, and dL/da * a (summed over tokens later for d(softplus(scale)))."""
    ch = _token_sum(g_phi * bh)
    ah_pm1 = tl.where(ah > 0, bh / tl.maximum(ah, 1e-30), 0.0)
    g_a = (P * n1 / n2) * ah_pm1 * (g_phi - ch * bh / (n2 * n2)) + ch * ah / (n1 * n2)
    g_a = tl.where(valid, g_a, 0.0).to(tl.float32)
    g_x = tl.where(x > 0, g_a / s, 0.0)
    return g_x, g_a * (ah * amax)


@triton.jit
def _permute_last(x):
    return tl.permute(x, (0, 2, 1))


# ----------------------------------------------------------------------------------------------------- kernels

@triton.jit
def _fwd_state_kernel(
        k_ptr, v_ptr, pos_ptr, s_ptr, kv_part_ptr, ksum_part_ptr,
        N, C, HEAD_DIM, H, blocks_per_split, n_blocks,
        HAS_POS: tl.constexpr, P: tl.constexpr, P_INT: tl.constexpr, DOT_PREC: tl.constexpr,
        BLOCK_N: tl.constexpr, H_PAD: tl.constexpr, D_PAD: tl.constexpr):
    """Per (batch, split): partial sum_n phi(k)_n^T v_n and sum_n phi(k)_n over the split's token blocks."""
    b = tl.program_id(0)
    split = tl.program_id(1)
    n_splits = tl.num_programs(1)
    base = b.to(tl.int64) * N * C
    offs0, chan, chan_ok, valid0 = _tile_offsets(0, N, C, HEAD_DIM, H, BLOCK_N, H_PAD, D_PAD)
    s = tl.load(s_ptr + chan, mask=chan_ok, other=1.0)
    kv = tl.zeros((H_PAD, D_PAD, D_PAD), dtype=tl.float32)
    ksum = tl.zeros((H_PAD, D_PAD), dtype=tl.float32)
    blk_end = tl.minimum((split + 1) * blocks_per_split, n_blocks)
    for blk in range(split * blocks_per_split, blk_end):
        offs, chan_blk, chan_ok_blk, valid = _tile_offsets(blk * BLOCK_N, N, C, HEAD_DIM, H, BLOCK_N, H_PAD, D_PAD)
        k = tl.load(k_ptr + base + offs, mask=valid, other=0.0).to(tl.float32)
        if HAS_POS:
            k += tl.load(pos_ptr + offs, mask=valid, other=0.0).to(tl.float32)
        v = tl.load(v_ptr + base + offs, mask=valid, other=0.0).to(tl.float32)
        phi, ah, bh, amax, n1, n2 = _focus_parts(k, s, valid, P, P_INT)
        phi = tl.where(valid, phi, 0.0)
        kv = tl.dot(_permute_last(phi), v, kv, input_precision=DOT_PREC)
        ksum += tl.sum(phi, axis=1)
    part = b * n_splits + split
    offs_h = tl.arange(0, H_PAD)[:, None, None]
    offs_i = tl.arange(0, D_PAD)[None, :, None]
    offs_j = tl.arange(0, D_PAD)[None, None, :]
    tl.store(kv_part_ptr + part.to(tl.int64) * H_PAD * D_PAD * D_PAD + (offs_h * D_PAD + offs_i) * D_PAD + offs_j, kv)
    offs_h2 = tl.arange(0, H_PAD)[:, None]
    offs_d2 = tl.arange(0, D_PAD)[None, :]
    tl.store(ksum_part_ptr + part.to(tl.int64) * H_PAD * D_PAD + offs_h2 * D_PAD + offs_d2, ksum)


@triton.jit
def _load_state(kv_ptr, kmean_ptr, b, H_PAD: tl.constexpr, D_PAD: tl.constexpr):
    offs_h = tl.arange(0, H_PAD)[:, None, None]
    offs_i = tl.arange(0, D_PAD)[None, :, None]
    offs_j = tl.arange(0, D_PAD)[None, None, :]
    kv = tl.load(kv_ptr + b.to(tl.int64) * H_PAD * D_PAD * D_PAD + (offs_h * D_PAD + offs_i) * D_PAD + offs_j)
    offs_h2 = tl.arange(0, H_PAD)[:, None]
    offs_d2 = tl.arange(0, D_PAD)[None, :]
    kmean = tl.load(kmean_ptr + b.to(tl.int64) * H_PAD * D_PAD + offs_h2 * D_PAD + offs_d2)
    return kv, kmean


@triton.jit
def _fwd_out_kernel(
        q_ptr, s_ptr, kv_ptr, kmean_ptr, out_ptr,
        N, C, HEAD_DIM, H,
        P: tl.constexpr, P_INT: tl.constexpr, DOT_PREC: tl.constexpr,
        BLOCK_N: tl.constexpr, H_PAD: tl.constexpr, D_PAD: tl.constexpr):
    """Per (batch, token block): out = phi(q) kv / (phi(q) . kmean + eps), all heads."""
    b = tl.program_id(0)
    blk = tl.program_id(1)
    base = b.to(tl.int64) * N * C
    offs, chan, chan_ok, valid = _tile_offsets(blk * BLOCK_N, N, C, HEAD_DIM, H, BLOCK_N, H_PAD, D_PAD)
    s = tl.load(s_ptr + chan, mask=chan_ok, other=1.0)
    q = tl.load(q_ptr + base + offs, mask=valid, other=0.0).to(tl.float32)
    kv, kmean = _load_state(kv_ptr, kmean_ptr, b, H_PAD, D_PAD)
    phi, ah, bh, amax, n1, n2 = _focus_parts(q, s, valid, P, P_INT)
    phi = tl.where(valid, phi, 0.0)
    num = tl.dot(phi, kv, input_precision=DOT_PREC)
    den = tl.sum(phi * kmean[:, None, :], axis=2, keep_dims=True) + 1e-6
    out = num / den
    tl.store(out_ptr + base + offs, out.to(out_ptr.dtype.element_ty), mask=valid)


@triton.jit
def _bwd_q_kernel(
        q_ptr, dout_ptr, s_ptr, kv_ptr, kmean_ptr, dq_ptr, dkv_part_ptr, dkmean_part_ptr, ds_part_ptr,
        N, C, HEAD_DIM, H, blocks_per_split, n_blocks,
        P: tl.constexpr, P_INT: tl.constexpr, DOT_PREC: tl.constexpr,
        BLOCK_N: tl.constexpr, H_PAD: tl.constexpr, D_PAD: tl.constexpr):
    """Query side: dq, and partial d(kv) = sum phi(q)^T g, d(kmean) = sum dden phi(q), sum dL/da * a."""
    b = tl.program_id(0)
    split = tl.program_id(1)
    n_splits = tl.num_programs(1)
    base = b.to(tl.int64) * N * C
    offs0, chan, chan_ok, valid0 = _tile_offsets(0, N, C, HEAD_DIM, H, BLOCK_N, H_PAD, D_PAD)
    s = tl.load(s_ptr + chan, mask=chan_ok, other=1.0)
    kv, kmean = _load_state(kv_ptr, kmean_ptr, b, H_PAD, D_PAD)
    kv_t = _permute_last(kv)
    dkv = tl.zeros((H_PAD, D_PAD, D_PAD), dtype=tl.float32)
    dkmean = tl.zeros((H_PAD, D_PAD), dtype=tl.float32)
    ds = tl.zeros((H_PAD, D_PAD), dtype=tl.float32)
    blk_end = tl.minimum((split + 1) * blocks_per_split, n_blocks)
    for blk in range(split * blocks_per_split, blk_end):
        offs, chan_blk, chan_ok_blk, valid = _tile_offsets(blk * BLOCK_N, N, C, HEAD_DIM, H, BLOCK_N, H_PAD, D_PAD)
        q = tl.load(q_ptr + base + offs, mask=valid, other=0.0).to(tl.float32)
        dout = tl.load(dout_ptr + base + offs, mask=valid, other=0.0).to(tl.float32)
        phi, ah, bh, amax, n1, n2 = _focus_parts(q, s, valid, P, P_INT)
        phi = tl.where(valid, phi, 0.0)
        den = tl.sum(phi * kmean[:, None, :], axis=2, keep_dims=True) + 1e-6
        out = tl.dot(phi, kv, input_precision=DOT_PREC) / den
        g = dout / den
        dden = -tl.sum(g * out, axis=2, keep_dims=True)
        g_phi = tl.dot(g, kv_t, input_precision=DOT_PREC) + dden * kmean[:, None, :]
        dkv = tl.dot(_permute_last(phi), g, dkv, input_precision=DOT_PREC)
        dkmean += tl.sum(dden * phi, axis=1)
        dq, ga_a = _focus_backward(g_phi, q, s, valid, ah, bh, amax, n1, n2, P)
        tl.store(dq_ptr + base + offs, dq.to(dq_ptr.dtype.element_ty), mask=valid)
        ds += tl.sum(ga_a, axis=1)
    part = b * n_splits + split
    offs_h = tl.arange(0, H_PAD)[:, None, None]
    offs_i = tl.arange(0, D_PAD)[None, :, None]
    offs_j = tl.arange(0, D_PAD)[None, None, :]
    tl.store(dkv_part_ptr + part.to(tl.int64) * H_PAD * D_PAD * D_PAD + (offs_h * D_PAD + offs_i) * D_PAD + offs_j,
             dkv)
    offs_h2 = tl.arange(0, H_PAD)[:, None]
    offs_d2 = tl.arange(0, D_PAD)[None, :]
    tl.store(dkmean_part_ptr + part.to(tl.int64) * H_PAD * D_PAD + offs_h2 * D_PAD + offs_d2, dkmean)
    tl.store(ds_part_ptr + part.to(tl.int64) * H_PAD * D_PAD + offs_h2 * D_PAD + offs_d2, ds)


@triton.jit
def _bwd_kv_kernel(
        k_ptr, v_ptr, pos_ptr, s_ptr, dkv_ptr, dkmean_ptr, dk_ptr, dv_ptr, ds_part_ptr,
        N, C, HEAD_DIM, H, blocks_per_split, n_blocks,
        HAS_POS: tl.constexpr, P: tl.constexpr, P_INT: tl.constexpr, DOT_PREC: tl.constexpr,
        BLOCK_N: tl.constexpr, H_PAD: tl.constexpr, D_PAD: tl.constexpr):
    """Key/value side, given d(kv) and d(kmean) already divided by N: dk, dv and partial sum dL/da * a."""
    b = tl.program_id(0)
    split = tl.program_id(1)
    n_splits = tl.num_programs(1)
    base = b.to(tl.int64) * N * C
    offs0, chan, chan_ok, valid0 = _tile_offsets(0, N, C, HEAD_DIM, H, BLOCK_N, H_PAD, D_PAD)
    s = tl.load(s_ptr + chan, mask=chan_ok, other=1.0)
    dkv, dkmean = _load_state(dkv_ptr, dkmean_ptr, b, H_PAD, D_PAD)
    dkv_t = _permute_last(dkv)
    ds = tl.zeros((H_PAD, D_PAD), dtype=tl.float32)
    blk_end = tl.minimum((split + 1) * blocks_per_split, n_blocks)
    for blk in range(split * blocks_per_split, blk_end):
        offs, chan_blk, chan_ok_blk, valid = _tile_offsets(blk * BLOCK_N, N, C, HEAD_DIM, H, BLOCK_N, H_PAD, D_PAD)
        k = tl.load(k_ptr + base + offs, mask=valid, other=0.0).to(tl.float32)
        if HAS_POS:
            k += tl.load(pos_ptr + offs, mask=valid, other=0.0).to(tl.float32)
        v = tl.load(v_ptr + base + offs, mask=valid, other=0.0).to(tl.float32)
        phi, ah, bh, amax, n1, n2 = _focus_parts(k, s, valid, P, P_INT)
        phi = tl.where(valid, phi, 0.0)
        g_phi = tl.dot(v, dkv_t, input_precision=DOT_PREC) + dkmean[:, None, :]
        dv = tl.dot(phi, dkv, input_precision=DOT_PREC)
        dk, ga_a = _focus_backward(g_phi, k, s, valid, ah, bh, amax, n1, n2, P)
        tl.store(dk_ptr + base + offs, dk.to(dk_ptr.dtype.element_ty), mask=valid)
        tl.store(dv_ptr + base + offs, dv.to(dv_ptr.dtype.element_ty), mask=valid)
        ds += tl.sum(ga_a, axis=1)
    part = b * n_splits + split
    offs_h2 = tl.arange(0, H_PAD)[:, None]
    offs_d2 = tl.arange(0, D_PAD)[None, :]
    tl.store(ds_part_ptr + part.to(tl.int64) * H_PAD * D_PAD + offs_h2 * D_PAD + offs_d2, ds)


# ------------------------------------------------------------------------------- flat layout (C_PAD <= 64)
# One [BLOCK_N, C_PAD] tile per program; the state is a block-diagonal (C_PAD, C_PAD) matrix, so per-head
# products are plain 2D dots, and per-head sums over a head's channels are dots with the block-diagonal mask.

@triton.jit
def _flat_offsets(row0, N, C, BLOCK_N: tl.constexpr, C_PAD: tl.constexpr):
    offs_n = row0 + tl.arange(0, BLOCK_N)[:, None]
    offs_c = tl.arange(0, C_PAD)[None, :]
    return offs_n * C + offs_c, (offs_n < N) & (offs_c < C)


@triton.jit
def _flat_focus(x, s, valid, P: tl.constexpr, P_INT: tl.constexpr):
    a = tl.where(valid, (tl.maximum(x, 0.0) + 1e-6) / s, 0.0)
    amax = tl.max(a, axis=1, keep_dims=True)
    amax = tl.where(amax > 0, amax, 1.0)
    ah = a / amax
    if P_INT > 0:
        bh = ah
        for _ in tl.static_range(P_INT - 1):
            bh = bh * ah
    else:
        bh = tl.where(ah > 0, tl.exp2(tl.log2(tl.maximum(ah, 1e-30)) * P), 0.0).to(tl.float32)
    n1 = tl.sqrt(tl.sum(ah * ah, axis=1, keep_dims=True))
    n2 = tl.sqrt(tl.sum(bh * bh, axis=1, keep_dims=True))
    n1 = tl.where(n1 > 0, n1, 1.0)
    n2 = tl.where(n2 > 0, n2, 1.0)
    phi = tl.where(valid, bh * (amax * n1 / n2), 0.0)
    return phi, ah, bh, amax, n1, n2


@triton.jit
def _flat_focus_backward(g_phi, x, s, valid, ah, bh, amax, n1, n2, P: tl.constexpr):
    ch = tl.sum(g_phi * bh, axis=1, keep_dims=True)
    ah_pm1 = tl.where(ah > 0, bh / tl.maximum(ah, 1e-30), 0.0)
    g_a = (P * n1 / n2) * ah_pm1 * (g_phi - ch * bh / (n2 * n2)) + ch * ah / (n1 * n2)
    g_a = tl.where(valid, g_a, 0.0).to(tl.float32)
    g_x = tl.where(x > 0, g_a / s, 0.0)
    return g_x, g_a * (ah * amax)


@triton.jit
def _block_diag(C, HEAD_DIM, C_PAD: tl.constexpr):
    ci = tl.arange(0, C_PAD)[:, None]
    cj = tl.arange(0, C_PAD)[None, :]
    return ((ci // HEAD_DIM) == (cj // HEAD_DIM)) & (ci < C) & (cj < C)


@triton.jit
def _head_sums(x, seg_matrix, BLOCK_N: tl.constexpr, C_PAD: tl.constexpr, SEG: tl.constexpr, DOT_PREC: tl.constexpr):
    """Each channel gets the sum of x over its head's channels. With a power-of-two head dim (SEG) this is a
    reshape + sum in registers; otherwise a dot with the block-diagonal ones matrix `seg_matrix`."""
    if SEG > 0:
        x3 = tl.reshape(x, (BLOCK_N, C_PAD // SEG, SEG))
        sums = tl.broadcast_to(tl.sum(x3, axis=2, keep_dims=True), (BLOCK_N, C_PAD // SEG, SEG))
        return tl.reshape(sums, (BLOCK_N, C_PAD))
    else:
        return tl.dot(x, seg_matrix, input_precision=DOT_PREC)


@triton.jit
def _flat_load_state(kv_ptr, kmean_ptr, b, C_PAD: tl.constexpr):
    ci = tl.arange(0, C_PAD)
    kv = tl.load(kv_ptr + b.to(tl.int64) * C_PAD * C_PAD + ci[:, None] * C_PAD + ci[None, :])
    kmean = tl.load(kmean_ptr + b.to(tl.int64) * C_PAD + ci)
    return kv, kmean


@triton.jit
def _flat_store_partials(mat_ptr, vec_ptr, part, mat, vec, C_PAD: tl.constexpr):
    ci = tl.arange(0, C_PAD)
    tl.store(mat_ptr + part.to(tl.int64) * C_PAD * C_PAD + ci[:, None] * C_PAD + ci[None, :], mat)
    tl.store(vec_ptr + part.to(tl.int64) * C_PAD + ci, vec)


@triton.jit
def _flat_fwd_state_kernel(
        k_ptr, v_ptr, pos_ptr, s_ptr, kv_part_ptr, ksum_part_ptr,
        N, C, HEAD_DIM, blocks_per_split, n_blocks,
        HAS_POS: tl.constexpr, P: tl.constexpr, P_INT: tl.constexpr, DOT_PREC: tl.constexpr,
        BLOCK_N: tl.constexpr, C_PAD: tl.constexpr):
    b = tl.program_id(0)
    split = tl.program_id(1)
    base = b.to(tl.int64) * N * C
    ch = tl.arange(0, C_PAD)[None, :]
    s = tl.load(s_ptr + ch, mask=ch < C, other=1.0)
    kv = tl.zeros((C_PAD, C_PAD), dtype=tl.float32)
    ksum = tl.zeros((C_PAD,), dtype=tl.float32)
    for blk in range(split * blocks_per_split, tl.minimum((split + 1) * blocks_per_split, n_blocks)):
        offs, valid = _flat_offsets(blk * BLOCK_N, N, C, BLOCK_N, C_PAD)
        k = tl.load(k_ptr + base + offs, mask=valid, other=0.0).to(tl.float32)
        if HAS_POS:
            k += tl.load(pos_ptr + offs, mask=valid, other=0.0).to(tl.float32)
        v = tl.load(v_ptr + base + offs, mask=valid, other=0.0).to(tl.float32)
        phi, ah, bh, amax, n1, n2 = _flat_focus(k, s, valid, P, P_INT)
        kv = tl.dot(tl.trans(phi), v, kv, input_precision=DOT_PREC)
        ksum += tl.sum(phi, axis=0)
    kv = tl.where(_block_diag(C, HEAD_DIM, C_PAD), kv, 0.0)
    _flat_store_partials(kv_part_ptr, ksum_part_ptr, b * tl.num_programs(1) + split, kv, ksum, C_PAD)


@triton.jit
def _flat_fwd_out_kernel(
        q_ptr, s_ptr, kv_ptr, kmean_ptr, out_ptr, N, C, HEAD_DIM,
        P: tl.constexpr, P_INT: tl.constexpr, DOT_PREC: tl.constexpr,
        BLOCK_N: tl.constexpr, C_PAD: tl.constexpr, SEG: tl.constexpr):
    b = tl.program_id(0)
    blk = tl.program_id(1)
    base = b.to(tl.int64) * N * C
    ch = tl.arange(0, C_PAD)[None, :]
    s = tl.load(s_ptr + ch, mask=ch < C, other=1.0)
    kv, kmean = _flat_load_state(kv_ptr, kmean_ptr, b, C_PAD)
    ones_bd = tl.where(_block_diag(C, HEAD_DIM, C_PAD), 1.0, 0.0) if SEG == 0 else 0.0
    offs, valid = _flat_offsets(blk * BLOCK_N, N, C, BLOCK_N, C_PAD)
    q = tl.load(q_ptr + base + offs, mask=valid, other=0.0).to(tl.float32)
    phi, ah, bh, amax, n1, n2 = _flat_focus(q, s, valid, P, P_INT)
    num = tl.dot(phi, kv, input_precision=DOT_PREC)
    den = _head_sums(phi * kmean[None, :], ones_bd, BLOCK_N, C_PAD, SEG, DOT_PREC) + 1e-6
    tl.store(out_ptr + base + offs, (num / den).to(out_ptr.dtype.element_ty), mask=valid)


@triton.jit
def _flat_bwd_q_kernel(
        q_ptr, dout_ptr, s_ptr, kv_ptr, kmean_ptr, dq_ptr, dkv_part_ptr, dkmean_part_ptr, ds_part_ptr,
        N, C, HEAD_DIM, blocks_per_split, n_blocks,
        P: tl.constexpr, P_INT: tl.constexpr, DOT_PREC: tl.constexpr,
        BLOCK_N: tl.constexpr, C_PAD: tl.constexpr, SEG: tl.constexpr):
    b = tl.program_id(0)
    split = tl.program_id(1)
    base = b.to(tl.int64) * N * C
    ch = tl.arange(0, C_PAD)[None, :]
    s = tl.load(s_ptr + ch, mask=ch < C, other=1.0)
    kv, kmean = _flat_load_state(kv_ptr, kmean_ptr, b, C_PAD)
    bd = _block_diag(C, HEAD_DIM, C_PAD)
    ones_bd = tl.where(bd, 1.0, 0.0) if SEG == 0 else 0.0
    kv_t = tl.trans(kv)
    dkv = tl.zeros((C_PAD, C_PAD), dtype=tl.float32)
    dkmean = tl.zeros((C_PAD,), dtype=tl.float32)
    ds = tl.zeros((C_PAD,), dtype=tl.float32)
    for blk in range(split * blocks_per_split, tl.minimum((split + 1) * blocks_per_split, n_blocks)):
        offs, valid = _flat_offsets(blk * BLOCK_N, N, C, BLOCK_N, C_PAD)
        q = tl.load(q_ptr + base + offs, mask=valid, other=0.0).to(tl.float32)
        dout = tl.load(dout_ptr + base + offs, mask=valid, other=0.0).to(tl.float32)
        phi, ah, bh, amax, n1, n2 = _flat_focus(q, s, valid, P, P_INT)
        den = _head_sums(phi * kmean[None, :], ones_bd, BLOCK_N, C_PAD, SEG, DOT_PREC) + 1e-6
        out = tl.dot(phi, kv, input_precision=DOT_PREC) / den
        g = dout / den
        dden = -_head_sums(g * out, ones_bd, BLOCK_N, C_PAD, SEG, DOT_PREC)
        g_phi = tl.dot(g, kv_t, input_precision=DOT_PREC) + dden * kmean[None, :]
        dkv = tl.dot(tl.trans(phi), g, dkv, input_precision=DOT_PREC)
        dkmean += tl.sum(dden * phi, axis=0)
        dq, ga_a = _flat_focus_backward(g_phi, q, s, valid, ah, bh, amax, n1, n2, P)
        tl.store(dq_ptr + base + offs, dq.to(dq_ptr.dtype.element_ty), mask=valid)
        ds += tl.sum(ga_a, axis=0)
    part = b * tl.num_programs(1) + split
    _flat_store_partials(dkv_part_ptr, dkmean_part_ptr, part, tl.where(bd, dkv, 0.0), dkmean, C_PAD)
    tl.store(ds_part_ptr + part.to(tl.int64) * C_PAD + tl.arange(0, C_PAD), ds)


@triton.jit
def _flat_bwd_kv_kernel(
        k_ptr, v_ptr, pos_ptr, s_ptr, dkv_ptr, dkmean_ptr, dk_ptr, dv_ptr, ds_part_ptr,
        N, C, HEAD_DIM, blocks_per_split, n_blocks,
        HAS_POS: tl.constexpr, P: tl.constexpr, P_INT: tl.constexpr, DOT_PREC: tl.constexpr,
        BLOCK_N: tl.constexpr, C_PAD: tl.constexpr):
    b = tl.program_id(0)
    split = tl.program_id(1)
    base = b.to(tl.int64) * N * C
    ch = tl.arange(0, C_PAD)[None, :]
    s = tl.load(s_ptr + ch, mask=ch < C, other=1.0)
    dkv, dkmean = _flat_load_state(dkv_ptr, dkmean_ptr, b, C_PAD)
    dkv_t = tl.trans(dkv)
    ds = tl.zeros((C_PAD,), dtype=tl.float32)
    for blk in range(split * blocks_per_split, tl.minimum((split + 1) * blocks_per_split, n_blocks)):
        offs, valid = _flat_offsets(blk * BLOCK_N, N, C, BLOCK_N, C_PAD)
        k = tl.load(k_ptr + base + offs, mask=valid, other=0.0).to(tl.float32)
        if HAS_POS:
            k += tl.load(pos_ptr + offs, mask=valid, other=0.0).to(tl.float32)
        v = tl.load(v_ptr + base + offs, mask=valid, other=0.0).to(tl.float32)
        phi, ah, bh, amax, n1, n2 = _flat_focus(k, s, valid, P, P_INT)
        g_phi = tl.dot(v, dkv_t, input_precision=DOT_PREC) + dkmean[None, :]
        dv = tl.dot(phi, dkv, input_precision=DOT_PREC)
        dk, ga_a = _flat_focus_backward(g_phi, k, s, valid, ah, bh, amax, n1, n2, P)
        tl.store(dk_ptr + base + offs, dk.to(dk_ptr.dtype.element_ty), mask=valid)
        tl.store(dv_ptr + base + offs, dv.to(dv_ptr.dtype.element_ty), mask=valid)
        ds += tl.sum(ga_a, axis=0)
    tl.store(ds_part_ptr + (b * tl.num_programs(1) + split).to(tl.int64) * C_PAD + tl.arange(0, C_PAD), ds)


# ---------------------------------------------------------------------------------------------------- launchers

def _dot_precision(*tensors) -> str:
    # fp32 inputs keep fp32 products (tf32x3 needs more shared memory than an H100 has at these tiles);
    # half inputs carry no more than tf32's 10-bit mantissa anyway
    return 'ieee' if any(t.dtype == torch.float32 for t in tensors) else 'tf32'


def _per_channel(x: torch.Tensor, cfg: dict, num_heads: int, head_dim: int) -> torch.Tensor:
    """Per-channel partials in the kernel layout ((C_PAD,) or (H_PAD, D_PAD)) -> (C,)."""
    if cfg['flat']:
        return x[..., :num_heads * head_dim]
    return x[..., :num_heads, :head_dim].reshape(*x.shape[:-2], num_heads * head_dim)


def forward(q, k, v, s, pos, num_heads: int, focusing_factor: float):
    """Returns out (B, N, C) in v's dtype and the fp32 state kv, kmean (already divided by N) in the layout of
    layout.state_shapes. q, k, v contiguous (B, N, C); s = softplus(scale) fp32 (C,); pos (N, C) or None."""
    B, N, C = q.shape
    head_dim = C // num_heads
    cfg = _launch_config(num_heads, head_dim, N, B, q.device)
    splits, bps, n_blocks = cfg['splits'], cfg['blocks_per_split'], cfg['n_blocks']
    kv_shape, kmean_shape = state_shapes(num_heads, head_dim)
    meta = dict(P=float(focusing_factor), P_INT=_pow_int(focusing_factor), DOT_PREC=_dot_precision(q, k, v),
                BLOCK_N=cfg['BLOCK_N'], num_warps=cfg['num_warps'], num_stages=cfg['num_stages'])
    meta.update(dict(C_PAD=cfg['C_PAD']) if cfg['flat'] else dict(H_PAD=cfg['H_PAD'], D_PAD=cfg['D_PAD']))
    kv_part = q.new_empty(B, splits, *kv_shape, dtype=torch.float32)
    ksum_part = q.new_empty(B, splits, *kmean_shape, dtype=torch.float32)
    has_pos = pos is not None
    pos_arg = pos if has_pos else k
    out = torch.empty_like(v)
    if cfg['flat']:
        _flat_fwd_state_kernel[(B, splits)](k, v, pos_arg, s, kv_part, ksum_part, N, C, head_dim, bps, n_blocks,
                                            HAS_POS=has_pos, **meta)
        kv, kmean = kv_part.sum(1).div_(N), ksum_part.sum(1).div_(N)
        _flat_fwd_out_kernel[(B, n_blocks)](q, s, kv, kmean, out, N, C, head_dim, SEG=cfg['SEG'], **meta)
    else:
        _fwd_state_kernel[(B, splits)](k, v, pos_arg, s, kv_part, ksum_part, N, C, head_dim, num_heads, bps,
                                       n_blocks, HAS_POS=has_pos, **meta)
        kv, kmean = kv_part.sum(1).div_(N), ksum_part.sum(1).div_(N)
        _fwd_out_kernel[(B, n_blocks)](q, s, kv, kmean, out, N, C, head_dim, num_heads, **meta)
    return out, kv, kmean


def backward(dout, q, k, v, s, pos, kv, kmean, num_heads: int, focusing_factor: float):
    """Returns dq, dk, dv (dtypes of q, k, v) and ds = dL/d softplus(scale) as fp32 (C,)."""
    B, N, C = q.shape
    head_dim = C // num_heads
    cfg = _launch_config(num_heads, head_dim, N, B, q.device, backward=True)
    splits, bps, n_blocks = cfg['splits'], cfg['blocks_per_split'], cfg['n_blocks']
    kv_shape, kmean_shape = state_shapes(num_heads, head_dim)
    meta = dict(P=float(focusing_factor), P_INT=_pow_int(focusing_factor), DOT_PREC=_dot_precision(q, k, v),
                BLOCK_N=cfg['BLOCK_N'], num_warps=cfg['num_warps'], num_stages=cfg['num_stages'])
    meta.update(dict(C_PAD=cfg['C_PAD']) if cfg['flat'] else dict(H_PAD=cfg['H_PAD'], D_PAD=cfg['D_PAD']))
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    dkv_part = q.new_empty(B, splits, *kv_shape, dtype=torch.float32)
    dkmean_part = q.new_empty(B, splits, *kmean_shape, dtype=torch.float32)
    ds_q_part = q.new_empty(B, splits, *kmean_shape, dtype=torch.float32)
    ds_k_part = q.new_empty(B, splits, *kmean_shape, dtype=torch.float32)
    has_pos = pos is not None
    pos_arg = pos if has_pos else k
    grid = (B, splits)
    if cfg['flat']:
        _flat_bwd_q_kernel[grid](q, dout, s, kv, kmean, dq, dkv_part, dkmean_part, ds_q_part,
                                 N, C, head_dim, bps, n_blocks, SEG=cfg['SEG'], **meta)
    else:
        _bwd_q_kernel[grid](q, dout, s, kv, kmean, dq, dkv_part, dkmean_part, ds_q_part,
                            N, C, head_dim, num_heads, bps, n_blocks, **meta)
    # kv = sum_n phi(k)^T v / N and kmean = sum_n phi(k) / N: fold the 1/N in once here
    dkv = dkv_part.sum(1).div_(N)
    dkmean = dkmean_part.sum(1).div_(N)
    if cfg['flat']:
        _flat_bwd_kv_kernel[grid](k, v, pos_arg, s, dkv, dkmean, dk, dv, ds_k_part,
                                  N, C, head_dim, bps, n_blocks, HAS_POS=has_pos, **meta)
    else:
        _bwd_kv_kernel[grid](k, v, pos_arg, s, dkv, dkmean, dk, dv, ds_k_part,
                             N, C, head_dim, num_heads, bps, n_blocks, HAS_POS=has_pos, **meta)
    ga_a = _per_channel((ds_q_part + ds_k_part).sum((0, 1)), cfg, num_heads, head_dim)
    return dq, dk, dv, -ga_a / s
