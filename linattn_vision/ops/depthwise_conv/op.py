"""Depthwise convolution on a token grid, plus a residual: FLatten's DWC branch (``x + dwc(v)``).

One head's K x K kernel is shared by all heads (official FLatten: a ``head_dim``-channel conv applied per head), so
``weight`` has ``group`` channels and channel c of the C = heads * group input uses kernel ``c % group``.

For inference on CUDA it runs as one Triton kernel that reads v where the qkv projection wrote it (a strided
slice of qkv) and adds the residual in the same pass. On an H100 in bf16 (BENCHMARKS.md, session 7), ``x + dwc(v)``
at FLatten-Swin-T stage 1 took 67.6 us at batch 1 and 1024x1024 against 203.5 us for torch (its native depthwise
kernel on the strided view, the repeated weights, the add; copying v to a dense channels-last tensor for cuDNN first
took as long, 221.2 us), 33.0 vs 116.8 us at stage 2, 181.9 vs 235.6 us at batch 64 and 224. Where a gradient is
needed, under torch.compile, on CPU or without Triton, it is ``F.conv2d`` on v's (B, C, H, W) view and an add.
"""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .._triton import INTERPRET, load_kernels, needs_grad


def _kernels():
    return load_kernels(__package__ + '.kernels')


def _runs_fused(x: torch.Tensor, weight: torch.Tensor, bias, residual) -> bool:
    if torch.compiler.is_compiling() or not (x.is_cuda or INTERPRET) or x.stride(2) != 1:
        return False
    if needs_grad(x, weight, bias, residual):
        return False
    if residual is not None and not residual.is_contiguous():
        return False
    return _kernels() is not None


def depthwise_conv_tokens(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], hw: Sequence[int],
                          residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``residual + conv2d(x on the (H, W) grid, weight repeated to C channels, 'same' zero padding, groups=C)``.

    Args:
        x: (B, H*W, C) tokens of a row-major H x W map (any batch / token strides).
        weight: (group, 1, K, K), K odd, C divisible by group; bias: (group,) or None.
        hw: (H, W).
        residual: (B, H*W, C) added to the result, or None.

    Returns (B, H*W, C), in the residual's dtype (x's without one); under autocast, as the torch ops would give.
    """
    B, N, C = x.shape
    H, W = hw
    group, K = weight.shape[0], weight.shape[-1]
    tracing = torch.jit.is_tracing()  # (sizes are tensors then: FLOP counters trace the models)
    if not tracing and (weight.shape[1:] != (1, K, K) or K % 2 == 0):
        raise ValueError(f'depthwise_conv_tokens: weight of shape {tuple(weight.shape)} is not (group, 1, K, K) '
                         'with an odd K')
    if not tracing and (C % group or N != H * W):
        raise ValueError(f'depthwise_conv_tokens: x of shape {tuple(x.shape)} does not fit a {H}x{W} grid of '
                         f'channels divisible by {group}')
    if _runs_fused(x, weight, bias, residual):
        if torch.is_autocast_enabled(x.device.type):
            out_dtype = torch.get_autocast_dtype(x.device.type)
        else:
            out_dtype = x.dtype
        if residual is not None:
            out_dtype = torch.promote_types(out_dtype, residual.dtype)
        return _kernels().depthwise_conv(x, weight, bias, (H, W), residual, out_dtype)
    grid = x.transpose(1, 2).reshape(B, C, H, W)
    heads = C // group
    out = F.conv2d(grid, weight.repeat(heads, 1, 1, 1), None if bias is None else bias.repeat(heads),
                   padding=K // 2, groups=C).flatten(2).transpose(1, 2)
    return out if residual is None else residual + out
