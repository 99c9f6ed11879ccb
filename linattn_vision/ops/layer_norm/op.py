"""LayerNorm whose output is in the autocast dtype, for the backbones under CUDA autocast.

Autocast runs LayerNorm in fp32: it reads the (fp32) residual stream, writes an fp32 result, and the linear layer
that follows casts that to bf16/fp16 in a separate copy (and the backward goes through both again). `layer_norm_to`
does it in one pass each way with Triton kernels: statistics in fp32, the output written in the low precision,
gradients for x (in its dtype), weight and bias. Without Triton, or for inputs it does not take, it is F.layer_norm
in fp32 followed by the cast.
"""
import torch
import torch.nn.functional as F

from .._triton import INTERPRET, load_kernels, needs_grad


def _kernels():
    return load_kernels(__package__ + '.kernels')


def runs_fused(x: torch.Tensor, weight, bias) -> bool:
    """Whether layer_norm_to takes the Triton kernels for these tensors."""
    if not (x.is_cuda or INTERPRET) or weight is None or bias is None or not x.is_contiguous():
        return False
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16) or x.numel() == 0:
        return False
    return _kernels() is not None


class _FusedLayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps, out_dtype):
        y, mean, rstd = _kernels().forward(x, weight, bias, eps, out_dtype, save_stats=True)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.bias_dtype = bias.dtype
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        x, weight, mean, rstd = ctx.saved_tensors
        dx, dw, db = _kernels().backward(dy.contiguous(), x, weight, mean, rstd)
        return dx, dw.to(weight.dtype), db.to(ctx.bias_dtype), None, None


def layer_norm_to(x: torch.Tensor, normalized_shape, weight, bias, eps: float,
                  out_dtype: torch.dtype) -> torch.Tensor:
    """F.layer_norm(x, ...) computed in fp32 and returned in out_dtype, differentiable in x, weight and bias."""
    if len(normalized_shape) == 1 and runs_fused(x, weight, bias):
        if needs_grad(x, weight, bias):
            return _FusedLayerNorm.apply(x, weight, bias, eps, out_dtype)
        return _kernels().forward(x, weight, bias, eps, out_dtype)[0]
    with torch.autocast(x.device.type, enabled=False):
        return F.layer_norm(x.float(), normalized_shape, None if weight is None else weight.float(),
                            None if bias is None else bias.float(), eps).to(out_dtype)
