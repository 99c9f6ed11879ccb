"""LayerNorm with a fused inference path: nn.LayerNorm's parameters and state dict. Meant as the backbones' norm
layer; not their default yet, because its speed on the GPU has not been measured (issue 9)."""
import torch
from torch import nn

from ..ops.layer_norm import layer_norm_to


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm that, in inference under CUDA autocast (no gradient needed, not being compiled), writes its
    output directly in the autocast dtype with one Triton kernel, where autocast would run it in fp32 and the next
    layer cast the result (see ops/layer_norm). Training, CPU and torch.compile take nn.LayerNorm's path."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.is_cuda and torch.is_autocast_enabled('cuda') and not torch.is_grad_enabled()
                and not torch.compiler.is_compiling()):
            return layer_norm_to(x, self.normalized_shape, self.weight, self.bias, self.eps,
                                 torch.get_autocast_dtype('cuda'))
        return super().forward(x)
