"""Focused linear attention modules (FLatten Transformer, ICCV 2023) on a token grid.

Parameter names follow the official release (``qkv`` or ``q``/``kv``, ``proj``, ``dwc``,
``scale``, ``positional_encoding``) so official checkpoints load without renaming. The math lives in
:func:`linattn_vision.ops.focused_linear_attention`; these modules only prepare its inputs.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn

from ..ops import depthwise_conv_tokens, focused_linear_attention
from .pos_embed import GridCache, resize_tokens_grid, to_hw

__all__ = ['FocusedLinearCore', 'FocusedLinearAttention']


class FocusedLinearCore(nn.Module):
    """The part of focused linear attention after q, k, v: positional encoding on k, the focused linear
    core, and the depthwise conv on v (one ``kernel_size`` kernel over head_dim channels, shared by all heads).

    ``FocusedLinearCore(dim, num_heads, grid_size, focusing_factor=3, kernel_size=5)``

    Args:
        dim: channels C of q, k, v.
        num_heads: heads; the DWC has C // num_heads channels.
        grid_size: (H, W) token grid of k at the default resolution; ``positional_encoding`` is
            (1, H*W, C) and is resized (bicubic) to other grids.
        focusing_factor: power p of the focusing function.
        kernel_size: DWC kernel size.

    Use it directly where a model computes its own q, k, v (CSwin): ``attend(q, k, v, hw)``.
    """

    def __init__(self, dim: int, num_heads: int, grid_size, focusing_factor: float = 3, kernel_size: int = 5):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'dim {dim} is not divisible by num_heads {num_heads}')
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.grid_size = to_hw(grid_size)
        self.focusing_factor = focusing_factor
        self.dwc = nn.Conv2d(self.head_dim, self.head_dim, kernel_size=kernel_size, padding=kernel_size // 2,
                             groups=self.head_dim)
        self.scale = nn.Parameter(torch.zeros(1, 1, dim))
        self.positional_encoding = nn.Parameter(torch.zeros(1, self.grid_size[0] * self.grid_size[1], dim))
        self._pos_cache = GridCache()

    def pos_embed(self, hw: Sequence[int]) -> torch.Tensor:
        """``positional_encoding`` for a live (H, W) grid of k: (1, H*W, C)."""
        hw = to_hw(hw)
        if hw == self.grid_size:
            return self.positional_encoding
        pos = self.positional_encoding
        return self._pos_cache.get(hw, (pos,), lambda: resize_tokens_grid(pos, self.grid_size, hw, 'bicubic'))

    def value_conv(self, v: torch.Tensor, hw: Sequence[int], residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        """DWC on v per head (one kernel shared by the heads): (B, H*W, C) -> (B, H*W, C), plus ``residual``.

        A C-channel depthwise conv with the head kernel repeated per head, on v as it lies (a slice of qkv): the
        same numbers as convolving each head apart, without copying v into a per-head layout
        (:func:`~linattn_vision.ops.depthwise_conv_tokens`; one Triton kernel with the add in inference on CUDA)."""
        return depthwise_conv_tokens(v, self.dwc.weight, self.dwc.bias, to_hw(hw), residual)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, hw: Sequence[int]) -> torch.Tensor:
        """q, k, v (B, H*W, C) on the (H, W) grid ``hw`` -> (B, H*W, C).

        Returns focused_linear_attention(q, k + pos, v) + DWC(v), before any output projection.
        """
        hw = to_hw(hw)
        if not q.shape[1] == k.shape[1] == hw[0] * hw[1]:
            raise ValueError(f'{type(self).__name__}: {q.shape[1]} query / {k.shape[1]} key tokens do not form '
                             f'the {hw[0]}x{hw[1]} grid')
        pos = self.pos_embed(hw)
        x = focused_linear_attention(q, k, v, self.scale, pos[0], num_heads=self.num_heads,
                                     focusing_factor=self.focusing_factor)
        return self.value_conv(v, hw, residual=x)

    def extra_repr(self) -> str:
        return (f'dim={self.dim}, num_heads={self.num_heads}, grid_size={self.grid_size}, '
                f'focusing_factor={self.focusing_factor}')


class FocusedLinearAttention(FocusedLinearCore):
    """Focused linear attention over a whole token grid, with its projections.

    ``FocusedLinearAttention(dim, num_heads, grid_size, qkv_bias=True, attn_drop=0., proj_drop=0.,
    focusing_factor=3, kernel_size=5, split_qkv=False)``

    Args:
        dim, num_heads, focusing_factor, kernel_size: as :class:`FocusedLinearCore`.
        grid_size: (H, W) token grid of the input at the default resolution (Swin: the whole stage map,
            PVT: the stage map); the size of ``positional_encoding``.
        qkv_bias: bias on the q/k/v projections.
        attn_drop: accepted for signature parity with softmax attention; the linear core has no attention
            matrix to drop.
        proj_drop: dropout after ``proj``.
        split_qkv: ``q`` and ``kv`` linears (official PVT / PVTv2 names) instead of one ``qkv``.

    No spatial reduction of k/v: the FLatten PVT models run without it (``la_sr_ratios`` 1111), and the
    focused-linear op takes as many keys as queries.

    ``forward(x, hw)``: x (B, H*W, C) on the (H, W) grid ``hw`` -> (B, H*W, C). Any grid works: the
    positional encoding is resized (bicubic) to the live grid, and cached per size when no gradient is needed.
    """

    def __init__(self, dim: int, num_heads: int, grid_size, qkv_bias: bool = True, attn_drop: float = 0.,
                 proj_drop: float = 0., focusing_factor: float = 3, kernel_size: int = 5, split_qkv: bool = False):
        super().__init__(dim, num_heads, grid_size, focusing_factor=focusing_factor, kernel_size=kernel_size)
        self.split_qkv = split_qkv
        if split_qkv:
            self.q = nn.Linear(dim, dim, bias=qkv_bias)
            self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        else:
            self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, hw: Sequence[int]) -> torch.Tensor:
        B, N, C = x.shape
        if self.split_qkv:
            q = self.q(x)
            k, v = self.kv(x).reshape(B, N, 2, C).unbind(2)
        else:
            q, k, v = self.qkv(x).reshape(B, N, 3, C).unbind(2)
        x = self.attend(q, k, v, hw)
        x = self.proj(x)
        return self.proj_drop(x)
