"""Softmax attention through scaled_dot_product_attention, with torch's memory-efficient kernel tried first.

With an additive float bias (Swin's relative position bias and shift mask, the agent biases), torch 2.11 on an H100
ran window attention at the speed of cuDNN's kernel (and a whole FLatten-Swin-T at 1024x1024 showed fp32 math-path
kernels for its shifted blocks); the memory-efficient kernel ran it 2-3x faster, and faster than cuDNN or flash
without a bias too (BENCHMARKS.md, session 7: Swin-T stage 3 at 1024x1024, 100 windows x 12 heads, 74.1 -> 35.5 us
with the shift mask, 28.2 -> 20.6 us without; batch 64 at 224, stage 3: 168.6 -> 58.1 us). Then cuDNN (what torch
chose there before), flash and math: inputs the efficient kernel does not take, and CPU tensors (flash, then math),
go where they went before. The efficient kernel wants the bias's last dim contiguous (a strided one fell to
another kernel: 179 vs 72 us for Swin's unshifted blocks).
"""
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

__all__ = ['softmax_attention']

_PRIORITY = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.MATH,
             SDPBackend.OVERRIDEABLE]


def softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias=None, dropout_p: float = 0.0,
                      scale=None) -> torch.Tensor:
    """``F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p, scale=scale)``, the
    memory-efficient kernel first (see the module note)."""
    with sdpa_kernel(_PRIORITY, set_priority=True):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p, scale=scale)
