"""Exact PyTorch focused linear attention (FLatten Transformer, ICCV 2023).

This is the oracle for every fast path and the implementation used off-GPU. It follows the current
official code: the focusing function runs over all C channels of a token (before the head split), and the
key statistics are averaged over N (kv / N, mean of k) with all accumulation in float32 or wider.
"""
import torch
import torch.nn.functional as F

from .._triton import autocast_off

EPS_RELU = 1e-6
EPS_DENOM = 1e-6


def focus(x: torch.Tensor, scale: torch.Tensor, focusing_factor: float = 3) -> torch.Tensor:
    """phi(x): (relu(x) + 1e-6) / softplus(scale), powered by p and renormalised to the pre-power norm."""
    return focus_with_divisor(x, F.softplus(scale), focusing_factor)


def focus_with_divisor(x: torch.Tensor, divisor: torch.Tensor, focusing_factor: float = 3) -> torch.Tensor:
    """phi(x) given the divisor softplus(scale) directly (the form the fused op takes)."""
    a = (F.relu(x) + EPS_RELU) / divisor
    a_norm = a.norm(dim=-1, keepdim=True)
    a_pow = a ** focusing_factor
    return a_pow / a_pow.norm(dim=-1, keepdim=True) * a_norm


def focused_linear_attention_reference(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        scale: torch.Tensor,
        pos: torch.Tensor | None = None,
        num_heads: int = 1,
        focusing_factor: float = 3,
) -> torch.Tensor:
    """Focused linear attention core.

    Args:
        q, k, v: (B, N, C), C = num_heads * head_dim.
        scale: (C,) raw learnable scale (used through softplus); any shape that flattens to C works.
        pos: optional (N, C) positional encoding added to k.
    Returns:
        (B, N, C) in the dtype of v.
    """
    B, N, C = q.shape
    if C % num_heads:
        raise ValueError(f'channels {C} not divisible by num_heads {num_heads}')
    # without autocast: it would run the products below in its low precision, where 1 / (phi(q) . kmean + eps)
    # overflows fp16 for a head whose focused query is tiny (a token negative in that head) and gives inf * 0 = NaN
    with autocast_off(q.device.type):
        return _reference_core(q, k, v, scale, pos, num_heads, focusing_factor)


def _reference_core(q, k, v, scale, pos, num_heads, focusing_factor):
    B, N, C = q.shape
    out_dtype = v.dtype
    # fp16 overflows in a^3 above ~40; compute in fp32 at least (float64 stays float64)
    work = torch.promote_types(q.dtype, torch.float32)
    q, k, v = q.to(work), k.to(work), v.to(work)
    scale = scale.reshape(C).to(work)
    if pos is not None:
        k = k + pos.reshape(N, C).to(work)
    q = focus(q, scale, focusing_factor)
    k = focus(k, scale, focusing_factor)
    d = C // num_heads
    q, k, v = (t.reshape(B, N, num_heads, d).transpose(1, 2) for t in (q, k, v))  # B h N d
    kv = (k.transpose(-2, -1) @ v) / N  # B h d d
    kmean = k.mean(dim=-2, keepdim=True)  # B h 1 d
    z = 1.0 / (q @ kmean.transpose(-2, -1) + EPS_DENOM)  # B h N 1
    out = (q @ kv) * z
    return out.transpose(1, 2).reshape(B, N, C).to(out_dtype)
