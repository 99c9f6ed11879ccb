"""Agent attention modules (Agent Attention, ECCV 2024) on a token grid.

n agent tokens A are average-pooled from the queries on a sqrt(n) x sqrt(n) grid (or, downstream, on a larger
``agent_shape`` grid, as the official detection / segmentation backbones' ``downstream_agent_shapes``);
agent aggregation V_A = softmax(A K^T s + B1) V, agent broadcast O = softmax(Q A^T s + B2) V_A,
then a depthwise conv on V is added to O. B1 / B2 are built from the official bias parameters
(``an_bias``/``na_bias`` on a 7x7 grid, ``ah``/``aw``/``ha``/``wa`` along the rows and columns of the token
grid, ``ac``/``ca`` for a class token) resized to the live grid, and their agent axis, read as the trained
sqrt(n) x sqrt(n) agent grid, resized (bilinear) to ``agent_shape``. Both softmax steps run in
:func:`linattn_vision.ops.agent_attention` with the biases broadcast over the batch.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import trunc_normal_

from ..ops import adaptive_avg_pool_tokens, agent_attention_tokens, depthwise_conv_tokens
from ..ops.agent import dense_bias
from .norm import LayerNorm
from .pos_embed import GridCache, resize_axis, resize_grid, to_hw

__all__ = ['AgentCore', 'AgentAttention']

# official bias grid of an_bias / na_bias
AGENT_BIAS_GRID = 7


class AgentCore(nn.Module):
    """Agent attention after q, k, v: agent pooling, position biases and the two softmax steps.

    ``AgentCore(dim, num_heads, grid_size, agent_num=49, kv_grid_size=None, attn_drop=0., num_prefix_tokens=0,
    agent_shape=None)``

    Args:
        dim: channels C of q, k, v.
        num_heads: heads.
        grid_size: (H, W) query token grid at the default resolution (sizes ``ha_bias`` / ``wa_bias``).
        agent_num: number of agents n, a square (pooled on a sqrt(n) x sqrt(n) grid).
        kv_grid_size: key/value grid at the default resolution (sizes ``ah_bias`` / ``aw_bias``);
            default ``grid_size`` (differs under PVT spatial reduction).
        attn_drop: dropout on both attention maps.
        num_prefix_tokens: tokens before the grid (DeiT class token); adds ``ac_bias`` (agents -> prefix keys)
            and ``ca_bias`` (prefix queries -> agents). Agents pool the grid tokens only.
        agent_shape: (h, w) grid the agents are pooled on; default the trained sqrt(n) x sqrt(n). The official
            detection / segmentation backbones pool more agents on larger maps (``downstream_agent_shapes``, e.g.
            12x12 from the 3x3 ImageNet agents): the bias parameters keep their trained shapes (checkpoints load
            as they are) and their agent axis is interpolated (bilinear) to this grid at run time.

    Use it directly where a model computes its own q, k, v (CSwin stripes): ``attend(q, k, v, hw)``.
    """

    def __init__(self, dim: int, num_heads: int, grid_size, agent_num: int = 49, kv_grid_size=None,
                 attn_drop: float = 0., num_prefix_tokens: int = 0, agent_shape=None):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'dim {dim} is not divisible by num_heads {num_heads}')
        pool_size = int(round(agent_num ** 0.5))
        if pool_size * pool_size != agent_num:
            raise ValueError(f'agent_num must be a square (agents are pooled on a square grid), got {agent_num}')
        agent_shape = (pool_size, pool_size) if agent_shape is None else to_hw(agent_shape)
        if min(agent_shape) < 1:
            raise ValueError(f'agent_shape must be a positive (h, w) grid, got {agent_shape}')
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.agent_num = agent_num  # agents of the bias parameters (the trained sqrt(n) x sqrt(n) grid)
        self.agent_grid = (pool_size, pool_size)
        self.agent_shape = agent_shape  # agents pooled at run time
        self.num_agents = agent_shape[0] * agent_shape[1]
        self.grid_size = to_hw(grid_size)
        self.kv_grid_size = self.grid_size if kv_grid_size is None else to_hw(kv_grid_size)
        self.num_prefix_tokens = num_prefix_tokens
        self.attn_drop = attn_drop
        H, W = self.grid_size
        Hk, Wk = self.kv_grid_size
        g = AGENT_BIAS_GRID
        self.an_bias = nn.Parameter(torch.zeros(num_heads, agent_num, g, g))
        self.na_bias = nn.Parameter(torch.zeros(num_heads, agent_num, g, g))
        self.ah_bias = nn.Parameter(torch.zeros(1, num_heads, agent_num, Hk, 1))
        self.aw_bias = nn.Parameter(torch.zeros(1, num_heads, agent_num, 1, Wk))
        self.ha_bias = nn.Parameter(torch.zeros(1, num_heads, H, 1, agent_num))
        self.wa_bias = nn.Parameter(torch.zeros(1, num_heads, 1, W, agent_num))
        if num_prefix_tokens:
            self.ac_bias = nn.Parameter(torch.zeros(1, num_heads, agent_num, num_prefix_tokens))
            self.ca_bias = nn.Parameter(torch.zeros(1, num_heads, num_prefix_tokens, agent_num))
        for p in self._bias_params():
            trunc_normal_(p, std=.02)
        self._bias_cache = GridCache()

    def _bias_params(self):
        params = [self.an_bias, self.na_bias, self.ah_bias, self.aw_bias, self.ha_bias, self.wa_bias]
        if self.num_prefix_tokens:
            params += [self.ac_bias, self.ca_bias]
        return params

    def _resize_agents(self, t: torch.Tensor, dim: int) -> torch.Tensor:
        """Resize the agent axis ``dim`` of a bias parameter from the trained agent grid to ``agent_shape``.

        The official downstream modules interpolate the agent axis after resizing the token axes; both are linear
        maps on different axes, so resizing the (smaller) parameter first gives the same biases.
        """
        if self.agent_shape == self.agent_grid:
            return t
        moved = t.movedim(dim, -1)
        grid = moved.reshape(*moved.shape[:-1], *self.agent_grid)
        grid = resize_grid(grid, self.agent_shape)
        return grid.reshape(*moved.shape[:-1], self.num_agents).movedim(-1, dim)

    def _build_biases(self, hw, kv_hw):
        h, a = self.num_heads, self.num_agents
        H, W = hw
        Hk, Wk = kv_hw
        # B1: agents -> keys, (1, h, a, P + Hk*Wk)
        agent_bias = resize_grid(self._resize_agents(self.an_bias, 1), kv_hw).reshape(1, h, a, Hk * Wk)
        ah = resize_axis(self._resize_agents(self.ah_bias, 2), 3, Hk)
        aw = resize_axis(self._resize_agents(self.aw_bias, 2), 4, Wk)
        agent_bias = agent_bias + (ah + aw).reshape(1, h, a, Hk * Wk)
        # B2: queries -> agents, (1, h, P + H*W, a)
        query_bias = resize_grid(self._resize_agents(self.na_bias, 1), hw).reshape(1, h, a, H * W).transpose(-2, -1)
        ha = resize_axis(self._resize_agents(self.ha_bias, 4), 2, H)
        wa = resize_axis(self._resize_agents(self.wa_bias, 4), 3, W)
        query_bias = query_bias + (ha + wa).reshape(1, h, H * W, a)
        if self.num_prefix_tokens:
            agent_bias = torch.cat([self._resize_agents(self.ac_bias, 2), agent_bias], dim=-1)
            query_bias = torch.cat([self._resize_agents(self.ca_bias, 3), query_bias], dim=-2)
        return agent_bias, query_bias

    def position_biases(self, hw: Sequence[int], kv_hw: Sequence[int] | None = None,
                        dtype: torch.dtype | None = None):
        """(B1, B2) for a live query grid ``hw`` and key grid ``kv_hw``: (1, h, n, P+Nk) and (1, h, P+N, n),
        contiguous, in ``dtype`` (default the parameters'). Cached in that dtype where GridCache caches
        (inference): half the memory of fp32 biases under bf16 autocast, and no cast or layout copy per call."""
        hw = to_hw(hw)
        kv_hw = hw if kv_hw is None else to_hw(kv_hw)

        def build():
            return tuple(dense_bias(t, dtype or t.dtype) for t in self._build_biases(hw, kv_hw))
        return self._bias_cache.get((hw, kv_hw, self.agent_shape, dtype), self._bias_params(), build)

    def agent_tokens(self, q: torch.Tensor, hw: Sequence[int]) -> torch.Tensor:
        """Pool the grid queries (B, P + H*W, C) to the agents (B, n, C) on the ``agent_shape`` grid."""
        return adaptive_avg_pool_tokens(q[:, self.num_prefix_tokens:], to_hw(hw), self.agent_shape)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, hw: Sequence[int],
               kv_hw: Sequence[int] | None = None) -> torch.Tensor:
        """q (B, P + H*W, C), k and v (B, P + h*w, C) -> agent attention output (B, P + H*W, C), before DWC."""
        hw = to_hw(hw)
        kv_hw = hw if kv_hw is None else to_hw(kv_hw)
        P = self.num_prefix_tokens
        N = q.shape[1]
        if N != P + hw[0] * hw[1] or k.shape[1] != P + kv_hw[0] * kv_hw[1]:
            raise ValueError(f'{type(self).__name__}: {N} query / {k.shape[1]} key tokens do not match '
                             f'{P} prefix tokens + the grids {hw[0]}x{hw[1]} / {kv_hw[0]}x{kv_hw[1]}')
        agent = self.agent_tokens(q, hw)
        agent_bias, query_bias = self.position_biases(hw, kv_hw, q.dtype)
        return agent_attention_tokens(q, k, v, agent, self.num_heads, agent_bias, query_bias, scale=self.scale,
                                      dropout_p=self.attn_drop if self.training else 0.)

    def extra_repr(self) -> str:
        shape = f', agent_shape={self.agent_shape}' if self.agent_shape != self.agent_grid else ''
        return (f'dim={self.dim}, num_heads={self.num_heads}, agent_num={self.agent_num}{shape}, '
                f'grid_size={self.grid_size}, kv_grid_size={self.kv_grid_size}, '
                f'num_prefix_tokens={self.num_prefix_tokens}')


class AgentAttention(AgentCore):
    """Agent attention over a whole token grid, with its projections and the DWC on v.

    ``AgentAttention(dim, num_heads, grid_size, agent_num=49, qkv_bias=True, attn_drop=0., proj_drop=0.,
    split_qkv=False, sr_ratio=1, num_prefix_tokens=0, kernel_size=3, norm_layer=LayerNorm, agent_shape=None)``

    Covers the official Swin (full-map window), PVT (``q``/``kv`` linears, spatial reduction ``sr`` conv +
    ``norm``), and DeiT (class token, ``num_prefix_tokens=1``) attention modules.

    Args:
        dim, num_heads, agent_num, attn_drop, num_prefix_tokens, agent_shape: as :class:`AgentCore`.
        grid_size: (H, W) query grid at the default resolution; the kv grid is (H // sr_ratio, W // sr_ratio).
        qkv_bias: bias on the q/k/v projections.
        proj_drop: dropout after ``proj``.
        split_qkv: ``q`` and ``kv`` linears instead of one ``qkv``.
        sr_ratio: PVT spatial reduction of k/v; needs ``split_qkv``. The DWC then runs on v upsampled
            (bilinear) to the query grid, as the official PVT model does.
        kernel_size: DWC kernel (depthwise over all C channels).
        norm_layer: norm after the spatial reduction.

    ``forward(x, hw)``: x (B, P + H*W, C) -> (B, P + H*W, C); prefix tokens get no DWC term.
    """

    def __init__(self, dim: int, num_heads: int, grid_size, agent_num: int = 49, qkv_bias: bool = True,
                 attn_drop: float = 0., proj_drop: float = 0., split_qkv: bool = False, sr_ratio: int = 1,
                 num_prefix_tokens: int = 0, kernel_size: int = 3, norm_layer=LayerNorm, agent_shape=None):
        grid_size = to_hw(grid_size)
        if sr_ratio > 1 and not split_qkv:
            raise ValueError('sr_ratio > 1 (spatial reduction of k/v) needs split_qkv=True (official q/kv layout)')
        if sr_ratio > 1 and num_prefix_tokens:
            raise ValueError('spatial reduction with prefix tokens is not supported')
        kv_grid = (grid_size[0] // sr_ratio, grid_size[1] // sr_ratio)
        super().__init__(dim, num_heads, grid_size, agent_num=agent_num, kv_grid_size=kv_grid,
                         attn_drop=attn_drop, num_prefix_tokens=num_prefix_tokens, agent_shape=agent_shape)
        self.split_qkv = split_qkv
        self.sr_ratio = sr_ratio
        if split_qkv:
            self.q = nn.Linear(dim, dim, bias=qkv_bias)
            self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        else:
            self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = norm_layer(dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.dwc = nn.Conv2d(dim, dim, kernel_size=kernel_size, padding=kernel_size // 2, groups=dim)

    def forward(self, x: torch.Tensor, hw: Sequence[int]) -> torch.Tensor:
        B, N, C = x.shape
        H, W = to_hw(hw)
        P = self.num_prefix_tokens
        if N != P + H * W:
            raise ValueError(f'{type(self).__name__}: {N} tokens are not {P} prefix tokens + the {H}x{W} grid')
        if self.split_qkv:
            q = self.q(x)
            if self.sr_ratio > 1:
                x_ = self.sr(x.transpose(1, 2).reshape(B, C, H, W))
                kv_hw = tuple(x_.shape[-2:])
                x_ = self.norm(x_.flatten(2).transpose(1, 2))
            else:
                x_, kv_hw = x, (H, W)
            k, v = self.kv(x_).reshape(B, -1, 2, C).unbind(2)
        else:
            q, k, v = self.qkv(x).reshape(B, N, 3, C).unbind(2)
            kv_hw = (H, W)
        out = self.attend(q, k, v, (H, W), kv_hw)
        v_tokens = v[:, P:]  # v as the projection wrote it (a strided slice: the Triton kernel reads it in place)
        if kv_hw != (H, W):
            v_map = F.interpolate(v_tokens.transpose(1, 2).reshape(B, C, *kv_hw), size=(H, W), mode='bilinear')
            v_tokens = v_map.flatten(2).transpose(1, 2)
        # the DWC and its add in one pass (one Triton kernel in inference on CUDA; a custom op under torch.compile)
        if P:
            out = torch.cat([out[:, :P], depthwise_conv_tokens(v_tokens, self.dwc.weight, self.dwc.bias, (H, W),
                                                               out[:, P:])], dim=1)
        else:
            out = depthwise_conv_tokens(v_tokens, self.dwc.weight, self.dwc.bias, (H, W), out)
        out = self.proj(out)
        return self.proj_drop(out)
