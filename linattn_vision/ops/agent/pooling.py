"""Agent pooling: adaptive average pooling of a token grid as two matrix products with 0/1 window matrices.

The agents of Agent attention are the queries average-pooled to a small grid (7x7 by default). On the token layout
(B, H*W, C), which is a channels-last grid, `F.adaptive_avg_pool2d` sums each output's window in one thread: at
1024x1024 (Agent-Swin-T stage 1, a 256x256 grid pooled to 7x7, windows of ~37x37 tokens) it took 5.4 ms per call at
batch 64 on an H100, a fifth of the backbone's GPU time. Averaging the window rows, then the window columns, with two
matrix products gives the same numbers and reads the tokens once, with no layout change.
"""
import torch

from .._triton import constant_cache


def _window_means(size: int, out: int, device, dtype):
    """(out, size) matrix averaging adaptive pooling's windows [floor(i * size / out), ceil((i + 1) * size / out))
    (they overlap where size is no multiple of out): row i holds 1 / window length on its window, 0 elsewhere."""
    i = torch.arange(out, device=device)[:, None]
    starts = torch.div(i * size, out, rounding_mode='floor')
    ends = -torch.div(-(i + 1) * size, out, rounding_mode='floor')
    pos = torch.arange(size, device=device)[None, :]
    inside = (pos >= starts) & (pos < ends)
    # the reciprocal in at least fp32 (fp64 inputs keep fp64 weights), then rounded once to the input dtype
    return (inside / (ends - starts).to(torch.promote_types(dtype, torch.float32))).to(dtype)


def _pool_matrices(H: int, W: int, oh: int, ow: int, device, dtype):
    return _window_means(H, oh, device, dtype), _window_means(W, ow, device, dtype)


# _pool_matrices, kept per (grid, output, device, dtype) (a few KB each); under torch.compile they are built in the
# graph instead
_cached_pool_matrices = constant_cache(maxsize=64)(_pool_matrices)


def adaptive_avg_pool_tokens(x: torch.Tensor, hw, out_hw) -> torch.Tensor:
    """x (B, H*W, C), the tokens of an (H, W) grid in row-major order -> (B, oh*ow, C): the values of
    `F.adaptive_avg_pool2d` of that grid to (oh, ow), row-major, in x's dtype. Each product averages (the
    tensor cores accumulate in fp32), so half inputs cannot overflow; in bf16 / fp16 the 1 / length weights round
    to the dtype (relative 2^-9 / 2^-11, below the rounding of the inputs themselves)."""
    B, N, C = x.shape
    (H, W), (oh, ow) = hw, out_hw
    if N != H * W:
        raise ValueError(f'adaptive_avg_pool_tokens: {N} tokens do not form the {H}x{W} grid')
    build = _pool_matrices if torch.compiler.is_compiling() else _cached_pool_matrices
    rows, cols = build(H, W, oh, ow, x.device, x.dtype)
    pooled = torch.matmul(rows, x.reshape(B, H, W * C))              # (B, oh, W*C): window rows averaged
    pooled = torch.matmul(cols, pooled.reshape(B * oh, W, C))        # (B*oh, ow, C): then window columns
    pooled = pooled.reshape(B, oh * ow, C)
    return pooled if pooled.dtype == x.dtype else pooled.to(x.dtype)  # (autocast may give the products another)
