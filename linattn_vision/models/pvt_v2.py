""" Pyramid Vision Transformer v2 with focused linear attention (FLatten).

Papers:
* `PVT v2: Improved Baselines with Pyramid Vision Transformer` - https://arxiv.org/abs/2106.13797
* `FLatten Transformer: Vision Transformer using Focused Linear Attention` (ICCV 2023)
  - https://arxiv.org/abs/2308.00442

``flatten_pvt_v2_b0`` ... ``b4`` put ``FocusedLinearAttention`` in every block of every stage, without spatial
reduction, as the official configs run them (LeapLabTHU/FLatten-Transformer ``models/flatten_pvt_v2.py`` with
``PVT_LA_SR_RATIOS: 1111``). The skeleton takes any attention layer with the PVT v1 block's interface.
State-dict keys are the official ones (``patch_embed{i}``, ``block{i}``, ``norm{i}``, ``mlp.dwconv.dwconv``), so
the release files load strictly through ``checkpoint_filter_fn``.
"""
import math
from functools import partial
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn

from timm.models import checkpoint, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from ..layers import FocusedLinearAttention, LayerNorm, to_hw
from ..ops import depthwise_conv_tokens
from ._builder import TimmApiMixin, build_official_model, drop_stages_after, flatten_release, make_cfg, \
    stage_intermediates
from .pvt import Block, check_image_batch, filter_state_dict, stage_args

__all__ = ['PyramidVisionTransformerV2', 'OverlapPatchEmbed', 'MlpWithDepthwiseConv', 'checkpoint_filter_fn']

FeatSize = Tuple[int, int]


class OverlapPatchEmbed(nn.Module):
    """Overlapping patch embedding: conv with kernel > stride and half-kernel padding, then LayerNorm."""

    def __init__(self, patch_size: int = 7, stride: int = 4, in_chans: int = 3, embed_dim: int = 64):
        super().__init__()
        if patch_size <= stride:
            raise ValueError(f'patch_size ({patch_size}) must be larger than stride ({stride}) to overlap')
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=stride, padding=patch_size // 2)
        self.norm = LayerNorm(embed_dim)  # default eps here, as in the official patch embedding

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, FeatSize]:
        x = self.proj(x)
        feat_size = (x.shape[2], x.shape[3])
        return self.norm(x.flatten(2).transpose(1, 2)), feat_size


class DWConv(nn.Module):
    """3x3 depthwise conv on a token grid (a module of its own so the official key ``dwconv.dwconv`` holds)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, bias=True, groups=dim)

    def forward(self, x: torch.Tensor, feat_size: FeatSize) -> torch.Tensor:
        # (the attention's DWC op: a Triton kernel in CUDA inference, a custom op under torch.compile)
        return depthwise_conv_tokens(x, self.dwconv.weight, self.dwconv.bias, feat_size)


class MlpWithDepthwiseConv(nn.Module):
    """PVTv2 MLP: fc1, 3x3 depthwise conv on the token grid, activation, fc2."""

    def __init__(
            self,
            in_features: int,
            hidden_features: Optional[int] = None,
            out_features: Optional[int] = None,
            act_layer: Callable[..., nn.Module] = nn.GELU,
            drop: float = 0.,
    ):
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.dwconv = DWConv(hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, feat_size: FeatSize) -> torch.Tensor:
        x = self.act(self.dwconv(self.fc1(x), feat_size))
        x = self.fc2(self.drop(x))
        return self.drop(x)


def _conv_out(n: int, kernel: int, stride: int) -> int:
    return (n + 2 * (kernel // 2) - kernel) // stride + 1


class PyramidVisionTransformerV2(TimmApiMixin, nn.Module):
    """PVTv2 skeleton: per stage an overlapping patch embedding, a stack of blocks and a LayerNorm.

    Module names follow the official release (``patch_embed{i}``, ``block{i}``, ``norm{i}``, 1-based).

    Args:
        img_size: training resolution; sizes the grid-shaped attention parameters. Other input sizes work
            too: the attention resizes them to the live token grid.
        attn_layer: builds the token mixer of a block; one callable, or one per stage. Called as
            ``attn_layer(dim, num_heads=, qkv_bias=, attn_drop=, proj_drop=, grid_size=(H, W), **stage_attn_kwargs[i])``
            with the stage's training grid; the module is then called as ``attn(x, (H, W))``.
        stage_attn_kwargs: extra attention arguments, one dict per stage.
    """

    def __init__(
            self,
            img_size: Union[int, Tuple[int, int]] = 224,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            embed_dims: Sequence[int] = (64, 128, 320, 512),
            depths: Sequence[int] = (3, 4, 6, 3),
            num_heads: Sequence[int] = (1, 2, 5, 8),
            mlp_ratios: Union[float, Sequence[float]] = (8., 8., 4., 4.),
            qkv_bias: bool = True,
            attn_layer: Union[Callable[..., nn.Module], Sequence[Callable[..., nn.Module]]] = partial(
                FocusedLinearAttention, split_qkv=True),
            stage_attn_kwargs: Optional[Sequence[Dict[str, Any]]] = None,
            drop_rate: float = 0.,
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
        self.grad_checkpointing = False
        # stage grids at the training resolution: 7x7 stride 4 stem, then 3x3 stride 2 (padded convs round up)
        self.grid_sizes = self._stage_grids(to_hw(img_size), num_stages)

        # on the cpu, so a build under torch.device('meta') works too
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device='cpu').tolist()
        self.feature_info = []
        cur = 0
        for i, grid in enumerate(self.grid_sizes):
            patch_embed = OverlapPatchEmbed(
                patch_size=7 if i == 0 else 3,
                stride=4 if i == 0 else 2,
                in_chans=in_chans if i == 0 else embed_dims[i - 1],
                embed_dim=embed_dims[i],
            )
            stage_attn = partial(attn_layers[i], grid_size=grid, **stage_attn_kwargs[i])
            blocks = nn.ModuleList([Block(
                dim=embed_dims[i],
                num_heads=num_heads[i],
                attn_layer=stage_attn,
                mlp_ratio=mlp_ratios[i],
                mlp_layer=MlpWithDepthwiseConv,
                qkv_bias=qkv_bias,
                proj_drop=proj_drop_rate,
                attn_drop=attn_drop_rate,
                drop_path=dpr[cur + j],
                norm_layer=norm_layer,
            ) for j in range(depths[i])])
            cur += depths[i]
            setattr(self, f'patch_embed{i + 1}', patch_embed)
            setattr(self, f'block{i + 1}', blocks)
            setattr(self, f'norm{i + 1}', norm_layer(embed_dims[i]))
            self.feature_info.append(dict(num_chs=embed_dims[i], reduction=4 * 2 ** i, module=f'norm{i + 1}'))

        self.num_features = self.head_hidden_size = embed_dims[-1]
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _stage_grids(img_size: FeatSize, num_stages: int) -> List[FeatSize]:
        grids = [(_conv_out(img_size[0], 7, 4), _conv_out(img_size[1], 7, 4))]
        while len(grids) < num_stages:
            grids.append((_conv_out(grids[-1][0], 3, 2), _conv_out(grids[-1][1], 3, 2)))
        return grids

    @staticmethod
    def _init_weights(m: nn.Module):
        TimmApiMixin._init_weights(m)  # linears and norms
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    # --- timm model API ---------------------------------------------------------------------------------------
    # (set_grad_checkpointing, get/reset_classifier, forward_head, forward: TimmApiMixin)

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        # as the official model: it lists pos_embed{i} / cls_token, which PVTv2 does not have, so its optimizer
        # decays the positional encodings and focusing scales like any other weight
        return set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(
            stem=r'^patch_embed1\.',
            blocks=r'^(?:patch_embed|block|norm)(\d+)' if coarse else [
                (r'^block(\d+)\.(\d+)', None),
                (r'^patch_embed(\d+)', (0,)),
                (r'^norm(\d+)', (99999,)),
            ],
        )

    # --- forward ----------------------------------------------------------------------------------------------

    def _forward_stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """NCHW in (image or previous stage), NCHW out (after the stage norm)."""
        x, feat_size = getattr(self, f'patch_embed{i + 1}')(x)
        for blk in getattr(self, f'block{i + 1}'):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(blk, x, feat_size)
            else:
                x = blk(x, feat_size)
        x = getattr(self, f'norm{i + 1}')(x)
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
        """Forward that also returns the outputs of the selected stages (NCHW, after each stage's norm).

        Args:
            indices: last n stages if int, all if None, the listed stages if a sequence
            norm: no effect (every stage output is already normalized)
            stop_early: stop after the last selected stage
            output_fmt: 'NCHW' only
            intermediates_only: return only the intermediates
        """
        if output_fmt != 'NCHW':
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        check_image_batch(self, x, 1)  # padded convs: any size
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
            self, max_index, lambda i: (f'patch_embed{i + 1}', f'block{i + 1}', f'norm{i + 1}'))
        self.grid_sizes = self.grid_sizes[:self.num_stages]
        if prune_head or prune_end:
            self.reset_classifier(0, '')
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        check_image_batch(self, x, 1)  # padded convs: any size
        for i in range(self.num_stages):
            x = self._forward_stage(i, x)
        return x  # NCHW: TimmApiMixin.forward_head pools dims (-2, -1)


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Official FLatten-PVTv2 weights -> this model (same key names; positional encodings resized)."""
    return filter_state_dict(state_dict, model)


def _create_pvt_v2(variant: str, pretrained: bool = False, **kwargs) -> PyramidVisionTransformerV2:
    out_indices = kwargs.pop('out_indices', (0, 1, 2, 3))
    return build_official_model(
        PyramidVisionTransformerV2, variant, pretrained, filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(feature_cls='getter', out_indices=out_indices), **kwargs)


def _cfg(**kwargs) -> Dict[str, Any]:
    return make_cfg(
        pool_size=(7, 7), first_conv='patch_embed1.proj',
        **flatten_release(), **kwargs)


default_cfgs = generate_default_cfgs({
    'flatten_pvt_v2_b0.in1k': _cfg(),
    'flatten_pvt_v2_b1.in1k': _cfg(),
    'flatten_pvt_v2_b2.in1k': _cfg(),
    'flatten_pvt_v2_b3.in1k': _cfg(),
    'flatten_pvt_v2_b4.in1k': _cfg(),
})


def _flatten_pvt_v2(variant: str, pretrained: bool, **kwargs) -> PyramidVisionTransformerV2:
    kwargs.setdefault('attn_layer', partial(FocusedLinearAttention, split_qkv=True, focusing_factor=3, kernel_size=5))
    return _create_pvt_v2(variant, pretrained=pretrained, **kwargs)


@register_model
def flatten_pvt_v2_b0(pretrained: bool = False, **kwargs) -> PyramidVisionTransformerV2:
    """FLatten-PVTv2-b0 (3.6M)."""
    model_args = dict(embed_dims=(32, 64, 160, 256), depths=(2, 2, 2, 2))
    return _flatten_pvt_v2('flatten_pvt_v2_b0', pretrained, **dict(model_args, **kwargs))


@register_model
def flatten_pvt_v2_b1(pretrained: bool = False, **kwargs) -> PyramidVisionTransformerV2:
    """FLatten-PVTv2-b1 (12.9M)."""
    model_args = dict(embed_dims=(64, 128, 320, 512), depths=(2, 2, 2, 2))
    return _flatten_pvt_v2('flatten_pvt_v2_b1', pretrained, **dict(model_args, **kwargs))


@register_model
def flatten_pvt_v2_b2(pretrained: bool = False, **kwargs) -> PyramidVisionTransformerV2:
    """FLatten-PVTv2-b2 (22.6M)."""
    model_args = dict(embed_dims=(64, 128, 320, 512), depths=(3, 4, 6, 3))
    return _flatten_pvt_v2('flatten_pvt_v2_b2', pretrained, **dict(model_args, **kwargs))


@register_model
def flatten_pvt_v2_b3(pretrained: bool = False, **kwargs) -> PyramidVisionTransformerV2:
    """FLatten-PVTv2-b3."""
    model_args = dict(embed_dims=(64, 128, 320, 512), depths=(3, 4, 18, 3))
    return _flatten_pvt_v2('flatten_pvt_v2_b3', pretrained, **dict(model_args, **kwargs))


@register_model
def flatten_pvt_v2_b4(pretrained: bool = False, **kwargs) -> PyramidVisionTransformerV2:
    """FLatten-PVTv2-b4."""
    model_args = dict(embed_dims=(64, 128, 320, 512), depths=(3, 8, 27, 3))
    return _flatten_pvt_v2('flatten_pvt_v2_b4', pretrained, **dict(model_args, **kwargs))
