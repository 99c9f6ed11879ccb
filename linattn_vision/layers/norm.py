"""LayerNorm with a fused autocast path: nn.LayerNorm's parameters and state dict. Meant as the backbones' norm
layer; not their default yet, because its speed on the GPU has not been measured (issue 9)."""
import torch
from timm.layers import LayerNorm as TimmLayerNorm
from torch import nn

from ..ops.layer_norm import layer_norm_to


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm that, under CUDA autocast (not while being compiled), writes its output directly in the
    autocast dtype with Triton kernels (forward and backward), where autocast would run it in fp32 and the next
    layer cast the result (see ops/layer_norm). CPU and torch.compile take nn.LayerNorm's path."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda and torch.is_autocast_enabled('cuda') and not torch.compiler.is_compiling():
            return layer_norm_to(x, self.normalized_shape, self.weight, self.bias, self.eps,
                                 torch.get_autocast_dtype('cuda'))
        return super().forward(x)


def fuse_layer_norms(module: nn.Module) -> int:
    """Replace every plain nn.LayerNorm or timm LayerNorm (with weight and bias; not subclasses with other layouts)
    inside ``module`` by :class:`LayerNorm` holding the same parameter objects (optimizers and state dicts see no
    change), in place, like torch's convert_sync_batchnorm. Works on any model, timm's baselines included. Returns
    how many were replaced."""
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
