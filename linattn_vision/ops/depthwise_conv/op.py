"""Depthwise convolution on a token grid, plus a residual: FLatten's and Agent's DWC branch (``x + dwc(v)``), and
PVTv2's mix-FFN conv (no residual).

One head's K x K kernel is shared by all heads (official FLatten: a ``head_dim``-channel conv applied per head), so
``weight`` has ``group`` channels and channel c of the C = heads * group input uses kernel ``c % group``.

For inference on CUDA it runs as one Triton kernel that reads v where the qkv projection wrote it (a strided
slice of qkv) and adds the residual in the same pass. On an H100 in bf16 (BENCHMARKS.md, session 7), ``x + dwc(v)``
at FLatten-Swin-T stage 1 took 67.6 us at batch 1 and 1024x1024 against 203.5 us for torch (its native depthwise
kernel on the strided view, the repeated weights, the add; copying v to a dense channels-last tensor for cuDNN first
took as long, 221.2 us), 33.0 vs 116.8 us at stage 2, 181.9 vs 235.6 us at batch 64 and 224. Where a gradient is
needed, under torch.compile, on CPU or without Triton, it is ``F.conv2d`` on v's (B, C, H, W) view and an add.

Under torch.compile that conv is a custom op (``linattn::depthwise_conv_grid``, cuDNN / oneDNN inside, its backward
``aten.convolution_backward``), so inductor's forward graph has no ``aten.convolution`` for it. With one per block,
inductor counted enough convolutions to switch on its layout optimisation, which gives the 4D tensors that feed or
follow a convolution (through any op but bmm) NCHW's channels-last strides: the Swin stages' (B, H, W, C)
LayerNorm outputs upstream of each DWC were then stored with H innermost, and compiled Agent-Swin-T training read
them strided (its stage-1 LayerNorm backwards took 3x 0.32 + 3x 0.15 ms per step on an H100). On torch 2.11 the op
was not taken until session 22 (``compiling_not_exporting``): with it, compiled Agent-Swin-T trained under CUDA
graphs at 3495 img/s against Swin-T's 3455 (H100), 0.85-0.87x before. torch.export keeps plain aten ops.
"""
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .._triton import INTERPRET, compiling_not_exporting, load_kernels, needs_grad


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
        out_dtype = _conv_dtype(x)
        if residual is not None:
            out_dtype = torch.promote_types(out_dtype, residual.dtype)
        return _kernels().depthwise_conv(x, weight, bias, (H, W), residual, out_dtype)
    heads = C // group
    if heads > 1:  # (one kernel per channel already: no copy)
        weight, bias = weight.repeat(heads, 1, 1, 1), None if bias is None else bias.repeat(heads)
    if compiling_not_exporting():  # (exported graphs: plain aten ops)
        # the dtype autocast would give F.conv2d, cast outside the op (the op itself runs without autocast)
        dtype = _conv_dtype(x)
        out = _conv_grid(x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype), H, W)
    else:
        out = _conv_tokens(x, weight, bias, H, W)
    return out if residual is None else residual + out


def _conv_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype F.conv2d of x computes in: autocast's where it is on for x's device, else x's."""
    return torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype


def _grid(tokens: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """(B, H*W, C) tokens as the (B, C, H, W) map they are (a view: channels-last strides for dense tokens)."""
    B, N, C = tokens.shape
    return tokens.transpose(1, 2).reshape(B, C, H, W)


def _conv_tokens(x, weight, bias, H: int, W: int) -> torch.Tensor:
    """Depthwise 'same' conv of the (B, H*W, C) tokens x with the full (C, 1, K, K) weight, as (B, H*W, C)."""
    return F.conv2d(_grid(x, H, W), weight, bias, padding=weight.shape[-1] // 2,
                    groups=x.shape[-1]).flatten(2).transpose(1, 2)


@torch.library.custom_op('linattn::depthwise_conv_grid', mutates_args=())
def _conv_grid(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], H: int, W: int) -> torch.Tensor:
    """_conv_tokens, contiguous, for torch.compile (see the module note); inputs in one dtype."""
    with torch.autocast(x.device.type, enabled=False):
        return _conv_tokens(x, weight, bias, H, W).contiguous()


@_conv_grid.register_fake
def _(x, weight, bias, H, W):
    return x.new_empty(x.shape)


def _conv_grid_setup(ctx, inputs, output):
    x, weight, bias, H, W = inputs
    ctx.save_for_backward(x, weight)
    ctx.hw, ctx.has_bias = (H, W), bias is not None


def _conv_grid_backward(ctx, grad):
    x, weight = ctx.saved_tensors
    (H, W), K = ctx.hw, weight.shape[-1]
    need = ctx.needs_input_grad
    dx, dweight, dbias = torch.ops.aten.convolution_backward(
        _grid(grad, H, W), _grid(x, H, W), weight, [weight.shape[0]] if ctx.has_bias else None, [1, 1],
        [K // 2, K // 2], [1, 1], False, [0, 0], x.shape[-1], [need[0], need[1], ctx.has_bias and need[2]])
    return (None if dx is None else dx.flatten(2).transpose(1, 2)), dweight, dbias, None, None


_conv_grid.register_autograd(_conv_grid_backward, setup_context=_conv_grid_setup)
