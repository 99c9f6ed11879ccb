"""LayerNorm whose output is in the autocast dtype, for inference under CUDA autocast.

Autocast runs LayerNorm in fp32: it reads the (fp32) residual stream, writes an fp32 result, and the linear layer
that follows casts that to bf16/fp16 in a separate copy. `layer_norm_to` does both in one pass (one Triton kernel
reading fp32 and writing the low precision): same statistics in fp32, fewer bytes, one kernel instead of two.
Without Triton, or for inputs it does not take, it is F.layer_norm followed by the cast.
"""
import torch
import torch.nn.functional as F

from .._triton import INTERPRET, load_kernels


def runs_fused(x: torch.Tensor, weight, bias) -> bool:
    """Whether layer_norm_to takes the Triton kernel for these tensors."""
    if not (x.is_cuda or INTERPRET) or weight is None or bias is None or not x.is_contiguous():
        return False
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16) or x.numel() == 0:
        return False
    return load_kernels(__package__ + '.kernels') is not None


def layer_norm_to(x: torch.Tensor, normalized_shape, weight, bias, eps: float,
                  out_dtype: torch.dtype) -> torch.Tensor:
    """F.layer_norm(x, ...) computed in fp32 and returned in out_dtype (no autograd through the Triton path: call
    it where no gradient is needed)."""
    if len(normalized_shape) == 1 and runs_fused(x, weight, bias):
        return load_kernels(__package__ + '.kernels').layer_norm(x, weight, bias, eps, out_dtype)
    with torch.autocast(x.device.type, enabled=False):
        return F.layer_norm(x.float(), normalized_shape, None if weight is None else weight.float(),
                            None if bias is None else bias.float(), eps).to(out_dtype)
