""" Pyramid Vision Transformer (v1) with focused linear attention (FLatten) or agent attention.

Papers:
* `Pyramid Vision Transformer: A Versatile Backbone for Dense Prediction without Convolutions`
  - https://arxiv.org/abs/2102.12122
* `FLatten Transformer: Vision Transformer using Focused Linear Attention` (ICCV 2023)
  - https://arxiv.org/abs/2308.00442
* `Agent Attention: On the Integration of Softmax and Linear Attention` (ECCV 2024) - https://arxiv.org/abs/2312.08874

One skeleton, the attention a parameter: ``flatten_pvt_*`` plug in ``FocusedLinearAttention`` and ``agent_pvt_*``
plug in ``AgentAttention``, both without spatial reduction, as the official configs run them
(LeapLabTHU/FLatten-Transformer ``models/flatten_pvt.py`` with ``PVT_LA_SR_RATIOS: 1111``,
LeapLabTHU/Agent-Attention ``agent_transformer/models/agent_pvt.py`` with ``PVT_LA_SR_RATIOS: 1111``).
State-dict keys are the official ones, so the release files load strictly through ``checkpoint_filter_fn``,
which only resizes grid-shaped parameters when the resolution differs.

As in both releases (and unlike the original PVT v1) there is no class token: the head averages the last
stage's tokens, and no final LayerNorm is applied.
"""
import math
from functools import partial
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from timm.layers import DropPath, Mlp, trunc_normal_
from timm.models import checkpoint, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from ..layers import (
    AgentAttention, FocusedLinearAttention, GridCache, LayerNorm, resize_axis, resize_tokens_grid, to_hw,
)
from ._builder import (
    TimmApiMixin, build_official_model, check_fits_ignoring_classifier, check_min_input_size, drop_stages_after,
    agent_release, flatten_release, make_cfg, model_name, official_state_dict, per_stage, stage_intermediates,
)

__all__ = ['PyramidVisionTransformer', 'PatchEmbed', 'Block', 'checkpoint_filter_fn']

FeatSize = Tuple[int, int]


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding: strided conv, then LayerNorm over channels. NCHW in, tokens out."""

    def __init__(self, patch_size: int = 4, in_chans: int = 3, embed_dim: int = 64):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = LayerNorm(embed_dim)  # default eps here, as in the official patch embedding

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, FeatSize]:
        x = self.proj(x)
        feat_size = (x.shape[2], x.shape[3])
        return self.norm(x.flatten(2).transpose(1, 2)), feat_size


class TokenMlp(Mlp):
    """timm's Mlp with the block's ``(x, feat_size)`` call (PVT v1's MLP does not use the grid)."""

    def forward(self, x: torch.Tensor, feat_size: Optional[FeatSize] = None) -> torch.Tensor:
        return super().forward(x)


class Block(nn.Module):
    """Pre-norm transformer block on (B, N, C) tokens of an (H, W) grid.

    ``attn_layer`` builds the token mixer and ``mlp_layer`` the channel MLP; both are called as
    ``module(x, feat_size)``.
    """

    def __init__(
            self,
            dim: int,
            num_heads: int,
            attn_layer: Callable[..., nn.Module],
            mlp_ratio: float = 4.,
            mlp_layer: Callable[..., nn.Module] = TokenMlp,
            qkv_bias: bool = True,
            proj_drop: float = 0.,
            attn_drop: float = 0.,
            drop_path: float = 0.,
            act_layer: Callable[..., nn.Module] = nn.GELU,
            norm_layer: Callable[..., nn.Module] = LayerNorm,
    ):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = attn_layer(dim, num_heads=num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = mlp_layer(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, x: torch.Tensor, feat_size: FeatSize) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x), feat_size))
        x = x + self.drop_path2(self.mlp(self.norm2(x), feat_size))
        return x


def stage_args(depths, embed_dims, num_heads, mlp_ratios, attn_layer, stage_attn_kwargs):
    """The per-stage arguments of a PVT-style model, checked: (num_stages, mlp_ratios, attn_layers,
    stage_attn_kwargs), the last three one entry per stage."""
    num_stages = len(depths)
    if len(embed_dims) != num_stages or len(num_heads) != num_stages:
        raise ValueError(f'depths, embed_dims and num_heads need one entry per stage, got '
                         f'{len(depths)}, {len(embed_dims)}, {len(num_heads)}')
    return (num_stages,
            per_stage(mlp_ratios, num_stages, 'mlp_ratios'),
            per_stage(attn_layer, num_stages, 'attn_layer'),
            per_stage(stage_attn_kwargs or {}, num_stages, 'stage_attn_kwargs'))


def _stage_grids(img_size, patch_size: int, num_stages: int) -> List[FeatSize]:
    """Token grid of every stage for an ``img_size`` input: patchify, then 2x2 patches (the convs floor)."""
    h, w = to_hw(img_size)
    grids = [(h // patch_size, w // patch_size)]
    while len(grids) < num_stages:
        grids.append((grids[-1][0] // 2, grids[-1][1] // 2))
    return grids


class PyramidVisionTransformer(TimmApiMixin, nn.Module):
    """PVT v1 skeleton: per stage a patch embedding, an absolute position embedding and a stack of blocks.

    Module names follow the official releases (``patch_embed{i}``, ``pos_embed{i}``, ``block{i}``, 1-based)
    so their state dicts load as they are.

    Args:
        img_size: training resolution; sizes the position embeddings and the grid-shaped attention parameters.
            Other input sizes work too: those parameters are resized (bicubic) to the live token grid.
        attn_layer: builds the token mixer of a block; one callable, or one per stage. Called as
            ``attn_layer(dim, num_heads=, qkv_bias=, attn_drop=, proj_drop=, grid_size=(H, W), **stage_attn_kwargs[i])``
            with the stage's training grid; the module is then called as ``attn(x, (H, W))``.
        stage_attn_kwargs: extra attention arguments, one dict per stage (e.g. ``agent_num``).
        unused_norm: create the final ``norm`` without applying it. The FLatten release stores weights for it
            but its forward pools the last stage directly; the module lets those files load strictly while the
            model computes what the official one computes.
    """

    def __init__(
            self,
            img_size: Union[int, Tuple[int, int]] = 224,
            patch_size: int = 4,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            embed_dims: Sequence[int] = (64, 128, 320, 512),
            depths: Sequence[int] = (2, 2, 2, 2),
            num_heads: Sequence[int] = (1, 2, 5, 8),
            mlp_ratios: Union[float, Sequence[float]] = (8., 8., 4., 4.),
            qkv_bias: bool = True,
            attn_layer: Union[Callable[..., nn.Module], Sequence[Callable[..., nn.Module]]] = partial(
                FocusedLinearAttention, split_qkv=True),
            stage_attn_kwargs: Optional[Sequence[Dict[str, Any]]] = None,
            unused_norm: bool = False,
            drop_rate: float = 0.,
            pos_drop_rate: float = 0.,
            proj_drop_rate: float = 0.,
            attn_drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            norm_layer: Callable[..., nn.Module] = partial(LayerNorm, eps=1e-6),
    ):
        super().__init__()
        self._check_global_pool(global_pool)
        num_stages, mlp_ratios, attn_layers, stage_attn_kwargs = stage_args(
            depths, embed_dims, num_heads, mlp_ratios, attn_layer, stage_attn_kwargs)

        self.num_classes = num_classes
        self.global_pool = global_pool
        self.in_chans = in_chans
        self.num_stages = num_stages
        self.patch_size = patch_size
        self.grad_checkpointing = False
        # smallest input that leaves every stage at least one token
        self.min_input_size = patch_size * 2 ** (num_stages - 1)
        # stage grids at the training resolution (conv patch embeddings floor odd sizes)
        self.pos_embed_sizes = _stage_grids(img_size, patch_size, num_stages)
        self._pos_cache = GridCache()

        # on the cpu, so a build under torch.device('meta') works too
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device='cpu').tolist()
        self.feature_info = []
        cur = 0
        for i, grid in enumerate(self.pos_embed_sizes):
            patch_embed = PatchEmbed(
                patch_size=patch_size if i == 0 else 2,
                in_chans=in_chans if i == 0 else embed_dims[i - 1],
                embed_dim=embed_dims[i],
            )
            pos_embed = nn.Parameter(torch.zeros(1, grid[0] * grid[1], embed_dims[i]))
            stage_attn = partial(attn_layers[i], grid_size=grid, **stage_attn_kwargs[i])
            blocks = nn.ModuleList([Block(
                dim=embed_dims[i],
                num_heads=num_heads[i],
                attn_layer=stage_attn,
                mlp_ratio=mlp_ratios[i],
                qkv_bias=qkv_bias,
                proj_drop=proj_drop_rate,
                attn_drop=attn_drop_rate,
                drop_path=dpr[cur + j],
                norm_layer=norm_layer,
            ) for j in range(depths[i])])
            cur += depths[i]
            setattr(self, f'patch_embed{i + 1}', patch_embed)
            setattr(self, f'pos_embed{i + 1}', pos_embed)
            setattr(self, f'block{i + 1}', blocks)
            self.feature_info.append(dict(
                num_chs=embed_dims[i], reduction=patch_size * 2 ** i, module=f'block{i + 1}'))
        self.pos_drop = nn.Dropout(pos_drop_rate)  # parameter-free, shared by the stages

        if unused_norm:
            self.norm = norm_layer(embed_dims[-1])
        self.num_features = self.head_hidden_size = embed_dims[-1]
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

        for i in range(num_stages):
            trunc_normal_(getattr(self, f'pos_embed{i + 1}'), std=.02)
        self.apply(self._init_weights)

    # --- timm model API ---------------------------------------------------------------------------------------
    # (set_grad_checkpointing, get/reset_classifier, forward_head, forward: TimmApiMixin)

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        # as the official models: they list only 'cls_token', which they do not have, so their optimizer decays the
        # position embeddings, positional encodings, focusing scales and agent biases like any other weight
        return set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(
            stem=r'^(?:patch_embed1\.|pos_embed1$)',
            blocks=r'^(?:patch_embed|pos_embed|block)(\d+)' if coarse else [
                (r'^block(\d+)\.(\d+)', None),
                (r'^(?:patch_embed|pos_embed)(\d+)', (0,)),
                (r'^norm', (99999,)),
            ],
        )

    # --- forward ----------------------------------------------------------------------------------------------

    def _check_input(self, x: torch.Tensor):
        check_image_batch(self, x, self.min_input_size)

    def _pos_embed(self, i: int, feat_size: FeatSize) -> torch.Tensor:
        pos_embed = getattr(self, f'pos_embed{i + 1}')
        trained = self.pos_embed_sizes[i]
        if feat_size == trained:
            return pos_embed
        return self._pos_cache.get(
            (i, feat_size), (pos_embed,), lambda: resize_tokens_grid(pos_embed, trained, feat_size, 'bicubic'))

    def _forward_stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """NCHW in (image or previous stage), NCHW out."""
        x, feat_size = getattr(self, f'patch_embed{i + 1}')(x)
        x = self.pos_drop(x + self._pos_embed(i, feat_size))
        for blk in getattr(self, f'block{i + 1}'):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(blk, x, feat_size)
            else:
                x = blk(x, feat_size)
        return x.reshape(x.shape[0], feat_size[0], feat_size[1], -1).permute(0, 3, 1, 2).contiguous()

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Forward that also returns the outputs of the selected stages (NCHW).

        Args:
            indices: last n stages if int, all if None, the listed stages if a sequence
            norm: no effect (the stages of this model end without a norm)
            stop_early: stop after the last selected stage
            output_fmt: 'NCHW' only
            intermediates_only: return only the intermediates
        """
        if output_fmt != 'NCHW':
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        self._check_input(x)
        return stage_intermediates(self._forward_stage, x, self.num_stages, indices, stop_early, intermediates_only)

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ):
        """Remove the stages after the last selected one (and the head); returns the selected indices."""
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        prune_end = drop_stages_after(
            self, max_index, lambda i: (f'patch_embed{i + 1}', f'pos_embed{i + 1}', f'block{i + 1}'))
        self.pos_embed_sizes = self.pos_embed_sizes[:self.num_stages]
        if (prune_norm or prune_end) and hasattr(self, 'norm'):
            del self.norm
        if prune_head or prune_end:
            self.reset_classifier(0, '')
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        for i in range(self.num_stages):
            x = self._forward_stage(i, x)
        return x  # NCHW: TimmApiMixin.forward_head pools dims (-2, -1)


# --- helpers shared with pvt_v2 -------------------------------------------------------------------------------

def check_image_batch(model: nn.Module, x: torch.Tensor, min_size: int):
    """A clear error for anything but an NCHW batch of at least ``min_size`` x ``min_size`` pixels."""
    if x.ndim != 4:
        raise ValueError(f'{model_name(model)} expects NCHW images, got a tensor of shape {tuple(x.shape)}')
    check_min_input_size(model, tuple(x.shape[-2:]), (min_size, min_size))


def _square_grid(num_tokens: int) -> Optional[FeatSize]:
    side = math.isqrt(num_tokens)
    return (side, side) if side * side == num_tokens else None


def _resize_grid_param(name: str, value: torch.Tensor, target: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """Resize one grid-shaped parameter of an official checkpoint (trained on a square input) to the model."""
    parent, _, leaf = name.rpartition('.')
    if leaf.startswith('pos_embed') and value.ndim == 3:
        # (1, H0*W0, C) stage position embedding -> the model's stage grid
        old = _square_grid(value.shape[1])
        new = model.pos_embed_sizes[int(leaf[len('pos_embed'):]) - 1]
        if old is not None and value.shape[2] == target.shape[2]:
            return resize_tokens_grid(value, old, new, 'bicubic')
    elif leaf == 'positional_encoding' and value.ndim == 3:
        # FLatten key positional encoding (1, h0*w0, C) -> the layer's kv grid
        old = _square_grid(value.shape[1])
        new = model.get_submodule(parent).grid_size
        if old is not None and value.shape[2] == target.shape[2]:
            return resize_tokens_grid(value, old, new, 'bicubic')
    elif leaf in ('ah_bias', 'aw_bias', 'ha_bias', 'wa_bias') and value.ndim == target.ndim:
        # agent row / column biases: one axis follows the grid
        diff = [d for d in range(value.ndim) if value.shape[d] != target.shape[d]]
        if len(diff) == 1:
            return resize_axis(value, diff[0], target.shape[diff[0]])
    return value


def filter_state_dict(state_dict: Mapping[str, Any], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Official (or already converted) weights -> this model's state dict, checked against the model.

    Accepts a bare state dict or a whole release file ({'model': ...}); resizes position parameters trained at
    another resolution; raises ``CheckpointError`` naming the first missing / unexpected / misshapen keys.
    The classifier is left out of the check: timm drops it itself when ``num_classes`` differs.
    """
    state_dict = official_state_dict(state_dict)
    own = model.state_dict()
    out = {}
    for name, value in state_dict.items():
        if name in own and value.shape != own[name].shape:
            value = _resize_grid_param(name, value, own[name], model)
        out[name] = value
    check_fits_ignoring_classifier(model, out, classifier='head', source=f'checkpoint for {model_name(model)}')
    return out


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Official FLatten-PVT / Agent-PVT weights -> this model (same key names; position parameters resized)."""
    return filter_state_dict(state_dict, model)


def _create_pvt(variant: str, pretrained: bool = False, **kwargs) -> PyramidVisionTransformer:
    out_indices = kwargs.pop('out_indices', (0, 1, 2, 3))
    return build_official_model(
        PyramidVisionTransformer, variant, pretrained, filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(feature_cls='getter', out_indices=out_indices), **kwargs)


def _cfg(**kwargs) -> Dict[str, Any]:
    # the smallest input leaves one token in the last stage (patch 4, then three 2x2 patchings)
    return make_cfg(**{'pool_size': (7, 7), 'first_conv': 'patch_embed1.proj', 'min_input_size': (3, 32, 32),
                       **kwargs})


default_cfgs = generate_default_cfgs({
    'flatten_pvt_t.in1k': _cfg(**flatten_release()),
    'flatten_pvt_s.in1k': _cfg(**flatten_release()),
    'flatten_pvt_m.in1k': _cfg(**flatten_release()),
    'flatten_pvt_l.in1k': _cfg(**flatten_release()),
    'agent_pvt_t.in1k': _cfg(**agent_release('13fdf0e0a7c5498c934f')),
    'agent_pvt_s.in1k': _cfg(**agent_release('36b8be9a8863456685a3')),
    'agent_pvt_m.in1k': _cfg(**agent_release('4d00ecacf18b45f9b88c')),
    'agent_pvt_l.in1k': _cfg(**agent_release('040cfe0cfbbe4762ad09')),
    'agent_pvt_m_256.in1k': _cfg(**agent_release('654df734121643b19c52'), input_size=(3, 256, 256),
                                 pool_size=(8, 8)),
})

# PVT v1 sizes shared by both families: (depths); dims (64, 128, 320, 512), heads (1, 2, 5, 8), mlp (8, 8, 4, 4)
_DEPTHS = dict(t=(2, 2, 2, 2), s=(3, 4, 6, 3), m=(3, 4, 18, 3), l=(3, 8, 27, 3))
_AGENT_NUM = (9, 16, 49, 49)  # official cfgs: MODEL.AGENT.NUM 9-16-49-49 for every size


def _flatten_pvt(variant: str, size: str, pretrained: bool, **kwargs) -> PyramidVisionTransformer:
    model_args = dict(
        depths=_DEPTHS[size],
        attn_layer=partial(FocusedLinearAttention, split_qkv=True, focusing_factor=3, kernel_size=5),
        unused_norm=True,
    )
    return _create_pvt(variant, pretrained=pretrained, **dict(model_args, **kwargs))


def _agent_pvt(variant: str, size: str, pretrained: bool, **kwargs) -> PyramidVisionTransformer:
    """``downstream_agent_shapes``: per stage, the (h, w) agent grid of the official detection / segmentation
    backbones (e.g. ``((12, 12), (16, 16), (28, 28), (28, 28))`` for Agent-PVT-T; None entries keep the
    trained sqrt(agent_num) square). Added to the stages' attention arguments as ``agent_shape``; the agent biases
    keep their ImageNet shapes and are interpolated to that grid at run time."""
    num_stages = len(kwargs.get('depths', _DEPTHS[size]))
    stage_attn_kwargs = kwargs.pop('stage_attn_kwargs', None) or [dict(agent_num=n) for n in _AGENT_NUM]
    agent_shapes = kwargs.pop('downstream_agent_shapes', None)
    if agent_shapes is not None:
        stage_attn_kwargs = per_stage(stage_attn_kwargs, num_stages, 'stage_attn_kwargs')
        agent_shapes = per_stage(agent_shapes, num_stages, 'downstream_agent_shapes')
        stage_attn_kwargs = [dict(stage, agent_shape=shape) for stage, shape in zip(stage_attn_kwargs, agent_shapes)]
    model_args = dict(
        depths=_DEPTHS[size],
        attn_layer=partial(AgentAttention, split_qkv=True),
        stage_attn_kwargs=stage_attn_kwargs,
    )
    return _create_pvt(variant, pretrained=pretrained, **dict(model_args, **kwargs))


@register_model
def flatten_pvt_t(pretrained: bool = False, **kwargs) -> PyramidVisionTransformer:
    """FLatten-PVT-T (12.2M)."""
    return _flatten_pvt('flatten_pvt_t', 't', pretrained, **kwargs)


@register_model
def flatten_pvt_s(pretrained: bool = False, **kwargs) -> PyramidVisionTransformer:
    """FLatten-PVT-S (21.7M)."""
    return _flatten_pvt('flatten_pvt_s', 's', pretrained, **kwargs)


@register_model
def flatten_pvt_m(pretrained: bool = False, **kwargs) -> PyramidVisionTransformer:
    """FLatten-PVT-M (37.2M)."""
    return _flatten_pvt('flatten_pvt_m', 'm', pretrained, **kwargs)


@register_model
def flatten_pvt_l(pretrained: bool = False, **kwargs) -> PyramidVisionTransformer:
    """FLatten-PVT-L (50.7M; the official cfg calls it flatten_pvt_b)."""
    return _flatten_pvt('flatten_pvt_l', 'l', pretrained, **kwargs)


@register_model
def agent_pvt_t(pretrained: bool = False, **kwargs) -> PyramidVisionTransformer:
    """Agent-PVT-T (11.6M)."""
    return _agent_pvt('agent_pvt_t', 't', pretrained, **kwargs)


@register_model
def agent_pvt_s(pretrained: bool = False, **kwargs) -> PyramidVisionTransformer:
    """Agent-PVT-S (20.6M)."""
    return _agent_pvt('agent_pvt_s', 's', pretrained, **kwargs)


@register_model
def agent_pvt_m(pretrained: bool = False, **kwargs) -> PyramidVisionTransformer:
    """Agent-PVT-M (35.9M)."""
    return _agent_pvt('agent_pvt_m', 'm', pretrained, **kwargs)


@register_model
def agent_pvt_l(pretrained: bool = False, **kwargs) -> PyramidVisionTransformer:
    """Agent-PVT-L (48.7M; the official cfg calls it agent_pvt_b)."""
    return _agent_pvt('agent_pvt_l', 'l', pretrained, **kwargs)


@register_model
def agent_pvt_m_256(pretrained: bool = False, **kwargs) -> PyramidVisionTransformer:
    """Agent-PVT-M trained at 256x256 (36.1M): position embeddings and agent biases sized for the 64x64 grid."""
    return _agent_pvt('agent_pvt_m_256', 'm', pretrained, **dict(dict(img_size=256), **kwargs))
