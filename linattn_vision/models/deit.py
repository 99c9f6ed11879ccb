"""DeiT with FLatten (focused linear) and Agent attention.

One DeiT skeleton (`DeiT`, a plain ViT with a class token), the attention of each block a parameter:

* ``'agent'``: agent attention (Agent Attention, ECCV 2024), as the official
  ``agent_transformer/models/agent_deit.py``: the class token is a query and a key/value like any token, with its
  own biases ``ac_bias`` / ``ca_bias``; agents pool the patch grid only; the 3x3 DWC on v feeds the patch
  tokens only. Agent-DeiT-B uses agent attention in its first 4 blocks and softmax attention after
  (``agent_layer=4``).
* ``'flatten'``: focused linear attention (FLatten Transformer, ICCV 2023) in every block. The official
  repository has no DeiT model file (FLatten-DeiT-T was trained in another code base), so this follows the
  FLatten attention module and treats the class token the way the official Agent-DeiT does: it is a query and a
  key/value of the focused linear attention like any token, its key gets no learned positional encoding
  (``positional_encoding`` covers the patch grid, (1, H*W, C)) and it gets no DWC term (the 5x5 DWC, one kernel
  shared by the heads, runs on the patch grid).
* ``'softmax'``: DeiT's own multi-head softmax attention.

Parameter names follow the official (timm 0.4 ``VisionTransformer``) layout: ``patch_embed.proj``, ``cls_token``,
``pos_embed``, ``blocks.{i}.{norm1,attn,norm2,mlp}``, ``norm``, ``head``, so official checkpoints load as they are.

Any input size works: the input is zero-padded to a multiple of the patch size, ``pos_embed`` (bicubic), the
FLatten positional encodings (bicubic) and the agent biases are resized to the live patch grid.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint
from timm.layers import Attention, DropPath, Mlp, PatchEmbed, calculate_drop_path_rates, resample_abs_pos_embed, \
    trunc_normal_
from timm.models import generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from ..layers.agent import AgentAttention
from ..layers.focused_linear import FocusedLinearAttention
from ..layers.norm import LayerNorm
from ..layers.pos_embed import to_hw
from ..ops import focused_linear_attention
from ._builder import FLATTEN_ORIGIN, TimmApiMixin, agent_release, build_official_model, \
    check_fits_ignoring_classifier, check_min_input_size, make_cfg, model_name, pad_to_patches
from .cswin import extract_weights, resize_grid_params

__all__ = ['DeiT', 'FocusedLinearPrefixAttention', 'SoftmaxAttention', 'DeiTBlock', 'checkpoint_filter_fn']

ATTN_KINDS = ('softmax', 'flatten', 'agent')


class FocusedLinearPrefixAttention(FocusedLinearAttention):
    """Focused linear attention over prefix tokens (class token) followed by a patch grid.

    The prefix tokens take part as queries and keys/values; the positional encoding on k and the DWC on v cover
    the grid tokens only. ``forward(x, hw)``: x (B, P + H*W, C) -> (B, P + H*W, C).
    """

    def __init__(self, dim: int, num_heads: int, grid_size, num_prefix_tokens: int = 1, **kwargs):
        super().__init__(dim, num_heads, grid_size, **kwargs)
        self.num_prefix_tokens = num_prefix_tokens

    def forward(self, x: torch.Tensor, hw: Sequence[int]) -> torch.Tensor:
        B, N, C = x.shape
        H, W = to_hw(hw)
        P = self.num_prefix_tokens
        if N != P + H * W:
            raise ValueError(f'{type(self).__name__}: {N} tokens are not {P} prefix tokens + the {H}x{W} grid')
        q, k, v = self.qkv(x).reshape(B, N, 3, C).unbind(2)
        pos = F.pad(self.pos_embed((H, W))[0], (0, 0, P, 0))  # no learned position for the prefix keys
        out = focused_linear_attention(q, k, v, self.scale, pos, num_heads=self.num_heads,
                                       focusing_factor=self.focusing_factor)
        conv = self.value_conv(v[:, P:], (H, W))
        out = torch.cat([out[:, :P], out[:, P:] + conv], dim=1)
        return self.proj_drop(self.proj(out))


class SoftmaxAttention(Attention):
    """DeiT's multi-head softmax attention (``qkv``, ``proj``) with the grid-aware call of the other kinds."""

    def forward(self, x: torch.Tensor, hw: Optional[Sequence[int]] = None) -> torch.Tensor:  # noqa: ARG002
        return super().forward(x)


class DeiTBlock(nn.Module):
    """Pre-norm transformer block; ``attn`` is ``'softmax'``, ``'flatten'`` or ``'agent'``."""

    def __init__(self, dim: int, num_heads: int, attn: str = 'softmax', grid_size=14, mlp_ratio: float = 4.,
                 qkv_bias: bool = True, proj_drop: float = 0., attn_drop: float = 0., drop_path: float = 0.,
                 act_layer=nn.GELU, norm_layer=LayerNorm, num_prefix_tokens: int = 1, **attn_kwargs):
        super().__init__()
        if attn not in ATTN_KINDS:
            raise ValueError(f'attn must be one of {ATTN_KINDS}, got {attn!r}')
        self.norm1 = norm_layer(dim)
        if attn == 'softmax':
            self.attn = SoftmaxAttention(dim, num_heads=num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop,
                                         proj_drop=proj_drop)
        elif attn == 'flatten':
            self.attn = FocusedLinearPrefixAttention(dim, num_heads, grid_size, num_prefix_tokens=num_prefix_tokens,
                                                     qkv_bias=qkv_bias, proj_drop=proj_drop, **attn_kwargs)
        else:
            self.attn = AgentAttention(dim, num_heads, grid_size, qkv_bias=qkv_bias, attn_drop=attn_drop,
                                       proj_drop=proj_drop, num_prefix_tokens=num_prefix_tokens, kernel_size=3,
                                       **attn_kwargs)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop)

    def forward(self, x: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), hw))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x


class DeiT(TimmApiMixin, nn.Module):
    """DeiT / ViT with a class token and a per-block choice of attention.

    Args:
        img_size: default input size (sizes ``pos_embed`` and the positional parameters of the attentions).
        patch_size, in_chans, num_classes, embed_dim, depth, num_heads, mlp_ratio, qkv_bias: usual.
        global_pool: ``'token'`` (class token, DeiT), ``'avg'`` (mean of the patch tokens) or ``''``.
        attn: attention of the blocks, ``'softmax'``, ``'flatten'`` or ``'agent'``.
        attn_layers: the first ``attn_layers`` blocks use ``attn``, the rest softmax attention (official
            ``agent_layer``; default all blocks).
        agent_num: agents per block (``'agent'``).
        focusing_factor, kernel_size: focused linear attention settings (``'flatten'``).
        drop_rate, proj_drop_rate, attn_drop_rate, drop_path_rate: usual.
    """
    global_pools = ('token', 'avg', '')

    def __init__(
            self,
            img_size: Union[int, Tuple[int, int]] = 224,
            patch_size: int = 16,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'token',
            embed_dim: int = 192,
            depth: int = 12,
            num_heads: int = 3,
            mlp_ratio: float = 4.,
            qkv_bias: bool = True,
            attn: str = 'softmax',
            attn_layers: Optional[int] = None,
            agent_num: int = 49,
            focusing_factor: float = 3,
            kernel_size: int = 5,
            drop_rate: float = 0.,
            pos_drop_rate: float = 0.,
            proj_drop_rate: float = 0.,
            attn_drop_rate: float = 0.,
            drop_path_rate: float = 0.,
    ):
        super().__init__()
        self._check_global_pool(global_pool)
        if attn not in ATTN_KINDS:
            raise ValueError(f'attn must be one of {ATTN_KINDS}, got {attn!r}')
        norm_layer = partial(LayerNorm, eps=1e-6)
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_prefix_tokens = 1
        self.patch_size = patch_size
        self.grad_checkpointing = False

        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=in_chans,
                                      embed_dim=embed_dim, flatten=False, output_fmt='NHWC',
                                      strict_img_size=False)
        self.grid_size = tuple(self.patch_embed.grid_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid_size[0] * self.grid_size[1] + 1, embed_dim))
        self.pos_drop = nn.Dropout(p=pos_drop_rate)

        attn_layers = depth if attn_layers is None or attn_layers <= 0 else attn_layers
        attn_kwargs = {}
        if attn == 'flatten':
            attn_kwargs = dict(focusing_factor=focusing_factor, kernel_size=kernel_size)
        elif attn == 'agent':
            attn_kwargs = dict(agent_num=agent_num)
        dpr = calculate_drop_path_rates(drop_path_rate, depth)
        self.blocks = nn.ModuleList([
            DeiTBlock(embed_dim, num_heads, attn=attn if i < attn_layers else 'softmax', grid_size=self.grid_size,
                      mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, proj_drop=proj_drop_rate, attn_drop=attn_drop_rate,
                      drop_path=dpr[i], norm_layer=norm_layer, **(attn_kwargs if i < attn_layers else {}))
            for i in range(depth)])
        self.feature_info = [dict(module=f'blocks.{i}', num_chs=embed_dim, reduction=patch_size) for i in range(depth)]
        self.norm = norm_layer(embed_dim)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()

        trunc_normal_(self.pos_embed, std=.02)
        trunc_normal_(self.cls_token, std=.02)
        self.apply(self._init_weights)

    # ----------------------------------------------------------------------------------------------- timm API
    # set_grad_checkpointing, get/reset_classifier, forward: TimmApiMixin
    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        return {'pos_embed', 'cls_token'}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(
            stem=r'^cls_token|^pos_embed|^patch_embed',
            blocks=[(r'^blocks\.(\d+)', None), (r'^norm', (99999,))],
        )

    # -------------------------------------------------------------------------------------------- forward
    def _embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        check_min_input_size(self, tuple(x.shape[-2:]), (self.patch_size, self.patch_size))
        # zero-pad to whole patches here, and only where needed (not PatchEmbed's dynamic_img_pad): under torch.compile
        # with symbolic image sizes the padded grid's size expression broke the backward of the antialiased bicubic
        # resize of pos_embed (torch 2.14; timm's ViT with dynamic_img_pad fails the same way)
        x = self.patch_embed(pad_to_patches(x, self.patch_size))  # B, h, w, C
        B, h, w, C = x.shape
        pos = self.pos_embed
        if (h, w) != self.grid_size:
            pos = resample_abs_pos_embed(pos, new_size=(h, w), old_size=self.grid_size, num_prefix_tokens=1)
        x = torch.cat([self.cls_token.expand(B, -1, -1), x.reshape(B, h * w, C)], dim=1) + pos
        return self.pos_drop(x), (h, w)

    def _run_block(self, blk: nn.Module, x: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return torch.utils.checkpoint.checkpoint(blk, x, hw, use_reentrant=False)
        return blk(x, hw)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """All tokens after the final norm, (B, 1 + h*w, C)."""
        x, hw = self._embed(x)
        for blk in self.blocks:
            x = self._run_block(blk, x, hw)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == 'token':
            x = x[:, 0]
        elif self.global_pool == 'avg':
            x = x[:, self.num_prefix_tokens:].mean(dim=1)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            return_prefix_tokens: bool = False,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Block outputs; patch tokens reshaped to NCHW maps (or kept as NLC), class token split off."""
        if output_fmt not in ('NCHW', 'NLC'):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        x, (h, w) = self._embed(x)
        blocks = self.blocks[:max_index + 1] if stop_early else self.blocks
        intermediates = []
        for i, blk in enumerate(blocks):
            x = self._run_block(blk, x, (h, w))
            if i in take_indices:
                intermediates.append(self.norm(x) if norm else x)
        prefix = [y[:, :self.num_prefix_tokens] for y in intermediates]
        intermediates = [y[:, self.num_prefix_tokens:] for y in intermediates]
        if output_fmt == 'NCHW':
            intermediates = [y.reshape(y.shape[0], h, w, -1).permute(0, 3, 1, 2).contiguous() for y in intermediates]
        if return_prefix_tokens:
            intermediates = list(zip(intermediates, prefix))
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[:max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, '')
        return take_indices


# ------------------------------------------------------------------------------------------ checkpoints
def checkpoint_filter_fn(state_dict: Dict[str, Any], model: DeiT) -> Dict[str, torch.Tensor]:
    """Official Agent-DeiT (or FLatten-DeiT-layout) checkpoint -> this model's state dict.

    Keys are the official ones; ``pos_embed`` (bicubic, class token kept), the FLatten positional encodings and
    the agent row/column biases are resized to the model's default grid. Everything but the classifier must fit,
    else a :class:`~linattn_vision.checkpoint.CheckpointError` names the offending keys.
    """
    state_dict = extract_weights(state_dict)
    out = {}
    for k, v in state_dict.items():
        if k == 'patch_embed.proj.weight' and v.ndim < 4:
            # DeiT checkpoints from before the conv patch embedding store a linear projection
            v = v.reshape(model.patch_embed.proj.weight.shape)
        elif k == 'pos_embed' and v.shape != model.pos_embed.shape:
            old = int(round((v.shape[1] - 1) ** 0.5))
            v = resample_abs_pos_embed(v, new_size=model.grid_size, old_size=(old, old), num_prefix_tokens=1)
        out[k] = v
    out = resize_grid_params(out, model)
    check_fits_ignoring_classifier(model, out, source=f'checkpoint for {model_name(model)}')
    return out


def _create_deit(variant: str, pretrained: bool = False, **kwargs) -> DeiT:
    out_indices = kwargs.pop('out_indices', 3)
    return build_official_model(DeiT, variant, pretrained, filter_fn=checkpoint_filter_fn,
                                feature_cfg=dict(feature_cls='getter', out_indices=out_indices), **kwargs)


def _cfg(**kwargs) -> Dict[str, Any]:
    # eval crop 0.875 at every size: the official repo resizes to 256/224 of the input and centre-crops
    return make_cfg(**{'min_input_size': (3, 16, 16), **kwargs})


_FLATTEN = dict(FLATTEN_ORIGIN, notes=('no official FLatten-DeiT release: no ImageNet weights; architecture as '
                                       'described in this module',))


default_cfgs = generate_default_cfgs({
    'flatten_deit_t': _cfg(**_FLATTEN),
    'flatten_deit_s': _cfg(**_FLATTEN),
    'flatten_deit_b': _cfg(**_FLATTEN),
    'agent_deit_t.in1k': _cfg(**agent_release('57e0904221824ee7b7af')),
    'agent_deit_s.in1k': _cfg(**agent_release('fdd43304372541db8ea7')),
    'agent_deit_b.in1k': _cfg(**agent_release('5115f15fdd7e4ab58fbc')),
    'agent_deit_s_448.in1k': _cfg(**agent_release('a228f86241c445f1969b'), input_size=(3, 448, 448)),
})

_TINY = dict(patch_size=16, embed_dim=192, depth=12, num_heads=3)
_SMALL = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6)
_BASE = dict(patch_size=16, embed_dim=768, depth=12, num_heads=12)


# FLatten-DeiT: no official config; DeiT's own training recipe (drop path 0.1) and FLatten's attention defaults
@register_model
def flatten_deit_t(pretrained: bool = False, **kwargs) -> DeiT:
    args = dict(_TINY, attn='flatten', drop_path_rate=0.1)
    return _create_deit('flatten_deit_t', pretrained, **dict(args, **kwargs))


@register_model
def flatten_deit_s(pretrained: bool = False, **kwargs) -> DeiT:
    args = dict(_SMALL, attn='flatten', drop_path_rate=0.1)
    return _create_deit('flatten_deit_s', pretrained, **dict(args, **kwargs))


@register_model
def flatten_deit_b(pretrained: bool = False, **kwargs) -> DeiT:
    args = dict(_BASE, attn='flatten', drop_path_rate=0.1)
    return _create_deit('flatten_deit_b', pretrained, **dict(args, **kwargs))


# Agent-DeiT: official cfgs/agent_deit_*.yaml (AGENT.NUM 49 for T/S, 81 for B; DROP_PATH_RATE 0.0 / 0.1 / 0.3)
@register_model
def agent_deit_t(pretrained: bool = False, **kwargs) -> DeiT:
    args = dict(_TINY, attn='agent', agent_num=49, drop_path_rate=0.0)
    return _create_deit('agent_deit_t', pretrained, **dict(args, **kwargs))


@register_model
def agent_deit_s(pretrained: bool = False, **kwargs) -> DeiT:
    args = dict(_SMALL, attn='agent', agent_num=49, drop_path_rate=0.1)
    return _create_deit('agent_deit_s', pretrained, **dict(args, **kwargs))


@register_model
def agent_deit_b(pretrained: bool = False, **kwargs) -> DeiT:
    args = dict(_BASE, attn='agent', attn_layers=4, agent_num=81, drop_path_rate=0.3)
    return _create_deit('agent_deit_b', pretrained, **dict(args, **kwargs))


@register_model
def agent_deit_s_448(pretrained: bool = False, **kwargs) -> DeiT:
    args = dict(_SMALL, img_size=448, attn='agent', agent_num=49, drop_path_rate=0.1)
    return _create_deit('agent_deit_s_448', pretrained, **dict(args, **kwargs))
