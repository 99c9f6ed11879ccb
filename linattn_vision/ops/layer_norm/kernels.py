"""Triton kernel of a LayerNorm over the last dimension that writes its output in another dtype.

One program normalises BLOCK_M rows at once (a [BLOCK_M, BLOCK_C] tile, statistics in fp32 along each row): the
backbones' channel counts are small (96 in Swin-T's first stage), where one row per thread block leaves most of
a block idle. Set TRITON_INTERPRET=1 before importing this module to run it on CPU tensors (tests do this).
"""
import torch
import triton
import triton.language as tl

# elements per program: enough rows of a narrow stage to keep every warp busy, one row of a 1024-wide one
_TILE = 4096


@triton.jit(do_not_specialize=['M'])
def _layer_norm_kernel(x_ptr, w_ptr, b_ptr, y_ptr, M, C, eps, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)[:, None]
    cols = tl.arange(0, BLOCK_C)[None, :]
    col_ok = cols < C
    mask = (rows < M) & col_ok
    x = tl.load(x_ptr + rows * C + cols, mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=1, keep_dims=True) / C
    centered = tl.where(col_ok, x - mean, 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(centered * centered, axis=1, keep_dims=True) / C + eps)
    w = tl.load(w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    y = centered * rstd * w + b
    tl.store(y_ptr + rows * C + cols, y.to(y_ptr.dtype.element_ty), mask=mask)


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
               out_dtype: torch.dtype) -> torch.Tensor:
    """x contiguous (..., C); weight and bias (C,) -> LayerNorm(x) in out_dtype, contiguous."""
    C = x.shape[-1]
    M = x.numel() // C
    y = torch.empty(x.shape, dtype=out_dtype, device=x.device)
    block_c = triton.next_power_of_2(C)
    block_m = max(1, _TILE // block_c)
    _layer_norm_kernel[(triton.cdiv(M, block_m),)](
        x, weight, bias, y, M, C, eps, BLOCK_M=block_m, BLOCK_C=block_c, num_warps=4 if block_c <= 1024 else 8)
    return y
