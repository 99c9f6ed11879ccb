"""Softmax attention through scaled_dot_product_attention, with torch's memory-efficient kernel tried first.

Given an additive float bias (Swin's relative position bias and shift mask, the agent biases), torch 2.11 on an H100
picks cuDNN's kernel, or for the merged window/head layout of shifted windows its math path in fp32; its
memory-efficient kernel ran the same window attention 2-3x faster, and faster than cuDNN / flash without a bias too
(BENCHMARKS.md, session 7: Swin-T stage 3 at 1024x1024, 100 windows x 12 heads, 74.1 -> 35.5 us with the shift mask,
28.2 -> 20.6 us without). The other backends follow in torch's own order, so inputs the efficient kernel does not
take, and CPU tensors, go where they went before.
"""
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

__all__ = ['softmax_attention']

_PRIORITY = [SDPBackend.EFFICIENT_ATTENTION] + [
    b for b in (SDPBackend(i) for i in torch._C._get_sdp_priority_order()) if b != SDPBackend.EFFICIENT_ATTENTION]


def softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias=None, dropout_p: float = 0.0,
                      scale=None) -> torch.Tensor:
    """``F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p, scale=scale)``, the
    memory-efficient kernel first (see the module note)."""
    with sdpa_kernel(_PRIORITY, set_priority=True):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p, scale=scale)
