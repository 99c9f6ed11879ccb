"""The backbones' LayerNorm: nn.LayerNorm's parameters and state dict, with a fused inference path under CUDA
autocast. `fused_layer_norm(False)` (or LINATTN_FUSED_LAYER_NORM=0) turns the fused path off, for A/B runs."""
import torch
from timm.layers import LayerNorm as TimmLayerNorm
from torch import nn

from .._switch import Switch
from ..ops._triton import needs_grad
from ..ops.layer_norm import layer_norm_to

_FUSED = Switch('LINATTN_FUSED_LAYER_NORM', default_on=True)


def fused_layer_norm(enabled: bool = True):
    """``with fused_layer_norm(False):`` LayerNorm modules skip the fused path inside the block (True: take it)."""
    return _FUSED.set(enabled)


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm that, in inference under CUDA autocast, writes its output directly in the autocast dtype with
    one Triton kernel (fp32 statistics), where autocast runs LayerNorm in fp32 and the next layer casts the result
    (see ops/layer_norm).

    Only where no gradient is needed: measured on an H100 (BENCHMARKS.md, session 6), the fused kernels cut the
    backbones' GPU time (FLatten-Swin-T b64@1024 inference 217 -> 150 ms of kernels) but a differentiable call
    costs ~0.4 ms more host time per layer (a Python autograd.Function and its backward on autograd's thread) than
    the native one, which made every eager training step slower. CPU, training and torch.compile take
    nn.LayerNorm's path."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_compiling() and _FUSED.on and x.is_cuda and torch.is_autocast_enabled('cuda'):
            if not needs_grad(x, self.weight, self.bias):
                return layer_norm_to(x, self.normalized_shape, self.weight, self.bias, self.eps,
                                     torch.get_autocast_dtype('cuda'))
        return super().forward(x)


def fuse_layer_norms(module: nn.Module) -> int:
    """Replace every plain nn.LayerNorm or timm LayerNorm (with weight and bias; not subclasses with other layouts)
    inside ``module`` by :class:`LayerNorm` holding the same parameter objects (optimizers and state dicts see no
    change), in place, like torch's convert_sync_batchnorm. For models built elsewhere (timm's baselines); this
    toolkit's backbones use :class:`LayerNorm` already. Returns how many were replaced."""
    replaced = 0
    for name, child in module.named_children():
        if type(child) in (nn.LayerNorm, TimmLayerNorm) and child.weight is not None and child.bias is not None:
            fused = LayerNorm(child.normalized_shape, eps=child.eps, device='meta')
            fused.weight, fused.bias = child.weight, child.bias
            fused.train(child.training)
            setattr(module, name, fused)
            replaced += 1
        else:
            replaced += fuse_layer_norms(child)
    return replaced
