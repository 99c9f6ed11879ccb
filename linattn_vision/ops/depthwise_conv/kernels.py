"""Triton kernel of a depthwise 2D convolution (stride 1, zero 'same' padding) on tokens in channels-last order,
with a residual added in the same pass: FLatten's DWC branch on v, read where the qkv projection wrote it.

Each program computes a [BLOCK_P, BLOCK_C] tile (BLOCK_P consecutive tokens of the row-major map, BLOCK_C
channels); the K*K taps load shifted token tiles of the input (neighbouring programs' loads meet in L2), and
accumulate in fp32. Set TRITON_INTERPRET=1 before importing this module to run it on CPU tensors (tests do this).
"""
import torch
import triton
import triton.language as tl

from .._triton import INTERPRET


def _tile(C: int) -> tuple[int, int]:
    """(BLOCK_P, BLOCK_C): channel blocks that divide C where a power of two does (96 -> 3 x 32), 64 at most."""
    block_c = C & -C
    if block_c < 16:
        block_c = triton.next_power_of_2(C)
    block_c = min(64, block_c)
    return (16 if INTERPRET else 4096 // block_c), block_c


@triton.jit(do_not_specialize=['H', 'W'])
def _dwconv_kernel(x_ptr, x_sb, x_sn, w_ptr, b_ptr, res_ptr, out_ptr, H, W, C, GROUP,
                   K: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr,
                   BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    pb = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    cb = tl.program_id(2)
    n = pb * BLOCK_P + tl.arange(0, BLOCK_P)
    c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    wc = c % GROUP  # channel c takes kernel c % GROUP (one head's kernel shared by all heads)
    row = n // W
    col = n % W
    n_ok = n < H * W
    x_base = x_ptr + b * x_sb
    acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    for ky in tl.static_range(K):
        r = row + (ky - K // 2)
        r_ok = n_ok & (r >= 0) & (r < H)
        for kx in tl.static_range(K):
            cc = col + (kx - K // 2)
            ok = r_ok & (cc >= 0) & (cc < W)
            src = (r * W + cc).to(tl.int64) * x_sn
            x = tl.load(x_base + src[:, None] + c[None, :], mask=ok[:, None] & c_ok[None, :], other=0.0)
            w = tl.load(w_ptr + wc * (K * K) + (ky * K + kx), mask=c_ok, other=0.0)
            acc += x.to(tl.float32) * w.to(tl.float32)[None, :]
    if HAS_BIAS:
        acc += tl.load(b_ptr + wc, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    offs = (b * H * W + n.to(tl.int64))[:, None] * C + c[None, :]
    mask = n_ok[:, None] & c_ok[None, :]
    if HAS_RES:
        acc += tl.load(res_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


def depthwise_conv(x, weight, bias, hw, residual, out_dtype):
    """x (B, H*W, C) with unit channel stride; weight (GROUP, 1, K, K); bias (GROUP,) or None; residual
    contiguous (B, H*W, C) or None. Returns a new contiguous (B, H*W, C) tensor in out_dtype."""
    B, N, C = x.shape
    H, W = hw
    group, K = weight.shape[0], weight.shape[-1]
    out = torch.empty((B, N, C), dtype=out_dtype, device=x.device)
    block_p, block_c = _tile(C)
    grid = (triton.cdiv(N, block_p), B, triton.cdiv(C, block_c))
    _dwconv_kernel[grid](
        x, x.stride(0), x.stride(1), weight.contiguous(), bias if bias is not None else weight,
        residual if residual is not None else out, out, H, W, C, group,
        K=K, HAS_BIAS=bias is not None, HAS_RES=residual is not None, BLOCK_P=block_p, BLOCK_C=block_c,
        num_warps=4)
    return out
