"""CSWin Transformer with FLatten (focused linear) and Agent attention.

One CSWin skeleton (`CSWinTransformer`), the attention of each stage a parameter:

* ``'lepe'``: CSWin's own softmax attention in cross-shaped stripes with the locally-enhanced positional
  encoding (LePE, a 3x3 depthwise conv on v). Two half-channel branches (vertical and horizontal stripes of
  width ``split_size``), or one branch over the whole map where the stripe covers the map (the last stage).
* ``'flatten'``: focused linear attention (FLatten Transformer, ICCV 2023) as one global branch over the whole
  stage map, plus the LePE conv. Core from :class:`linattn_vision.layers.FocusedLinearCore`.
* ``'agent'``: agent attention (Agent Attention, ECCV 2024) as one global branch, plus the LePE conv.
  Core from :class:`linattn_vision.layers.AgentCore`.

The official FLatten / Agent CSwin models (LeapLabTHU/FLatten-Transformer ``models/flatten_cswin.py``,
LeapLabTHU/Agent-Attention ``agent_transformer/models/agent_cswin.py``) use the new attention in stages 1-2
(``LLSS`` / ``AABB``, with the linear split size equal to the stage resolution, i.e. one global branch) and
CSwin stripes in stages 3-4. Module and parameter names follow those files, so their checkpoints load as they
are: ``stage1_conv_embed``, ``stage1``, ``merge1``, ..., ``stage4``, ``norm``, ``head``.

Any input size works: stripes follow the live grid (the last stripe is zero-padded and the padding is masked
out of the softmax), and the positional encodings / agent biases are resized to the live grid.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint
from timm.layers import DropPath, Mlp, calculate_drop_path_rates
from timm.models import generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from ..checkpoint import CheckpointError, extract_state_dict
from ..layers.agent import AgentCore
from ..layers.focused_linear import FocusedLinearCore
from ..layers.norm import LayerNorm
from ..layers.pos_embed import resize_axis, resize_tokens_grid, to_hw
from ..ops import depthwise_conv_tokens, softmax_attention
from ._builder import TimmApiMixin, agent_release, build_official_model, check_fits_ignoring_classifier, \
    check_min_input_size, drop_stages_after, flatten_release, make_cfg, model_name

__all__ = [
    'CSWinTransformer', 'LePEAttention', 'FocusedLinearBranch', 'AgentBranch', 'CSWinBlock', 'checkpoint_filter_fn',
    'resize_grid_params',
]

ATTN_KINDS = ('lepe', 'flatten', 'agent')


def _to_map(x: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
    """(B, H*W, C) tokens -> (B, C, H, W) map."""
    B, N, C = x.shape
    return x.transpose(1, 2).reshape(B, C, hw[0], hw[1])


def _from_map(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) map -> (B, H*W, C) tokens."""
    return x.flatten(2).transpose(1, 2)


class LePEAttention(nn.Module):
    """CSWin softmax attention inside stripes, plus LePE (3x3 depthwise conv on v inside each stripe).

    Args:
        dim: channels of this branch.
        num_heads: heads of this branch.
        split_size: stripe width.
        orientation: ``'vertical'`` (stripes span the full height, ``split_size`` wide; official idx 0),
            ``'horizontal'`` (full width, ``split_size`` high; idx 1) or ``None`` (one window over the whole map;
            idx -1).
        attn_drop: dropout on the attention map.

    ``forward(q, k, v, hw)``: q, k, v (B, H*W, C) on the (H, W) grid -> (B, H*W, C). A grid that the stripes do
    not tile is zero-padded to the next multiple of ``split_size``; padded keys are masked out.
    """

    def __init__(self, dim: int, num_heads: int, split_size: int = 7, orientation: Optional[str] = None,
                 attn_drop: float = 0.):
        super().__init__()
        if orientation not in (None, 'vertical', 'horizontal'):
            raise ValueError(f"orientation must be 'vertical', 'horizontal' or None, got {orientation!r}")
        self.dim = dim
        self.num_heads = num_heads
        self.split_size = split_size
        self.orientation = orientation
        self.scale = (dim // num_heads) ** -0.5
        self.attn_drop = attn_drop
        self.get_v = nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=1, groups=dim)

    def stripe(self, hw: Tuple[int, int]) -> Tuple[int, int]:
        """(stripe height, stripe width) on a live (H, W) grid."""
        H, W = hw
        if self.orientation == 'vertical':
            return H, self.split_size
        if self.orientation == 'horizontal':
            return self.split_size, W
        return H, W

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, hw: Sequence[int]) -> torch.Tensor:
        B, N, C = q.shape
        H, W = to_hw(hw)
        sh, sw = self.stripe((H, W))
        pad_h, pad_w = (-H) % sh, (-W) % sw
        Hp, Wp = H + pad_h, W + pad_w

        def to_stripes(t):  # (B, N, C) -> (B * num_stripes, sh * sw, C)
            t = t.reshape(B, H, W, C)
            if pad_h or pad_w:
                t = F.pad(t, (0, 0, 0, pad_w, 0, pad_h))
            t = t.reshape(B, Hp // sh, sh, Wp // sw, sw, C).permute(0, 1, 3, 2, 4, 5)
            return t.reshape(-1, sh * sw, C)

        q, k, v = to_stripes(q), to_stripes(k), to_stripes(v)
        Bs, n, _ = q.shape
        # LePE: depthwise conv on v inside each stripe, zero padding at the stripe border
        lepe = depthwise_conv_tokens(v, self.get_v.weight, self.get_v.bias, (sh, sw))

        mask = None
        if pad_h or pad_w:
            valid = q.new_ones(1, H, W, 1)
            valid = F.pad(valid, (0, 0, 0, pad_w, 0, pad_h))
            valid = valid.reshape(1, Hp // sh, sh, Wp // sw, sw, 1).permute(0, 1, 3, 2, 4, 5).reshape(-1, n)
            mask = (valid > 0).repeat(B, 1)[:, None, None, :]  # keys only; (B * stripes, 1, 1, n)

        h, d = self.num_heads, C // self.num_heads
        q, k, v = (t.reshape(Bs, n, h, d).transpose(1, 2) for t in (q, k, v))
        x = softmax_attention(q, k, v, mask, dropout_p=self.attn_drop if self.training else 0., scale=self.scale)
        x = x.transpose(1, 2).reshape(Bs, n, C) + lepe

        x = x.reshape(B, Hp // sh, Wp // sw, sh, sw, C).permute(0, 1, 3, 2, 4, 5).reshape(B, Hp, Wp, C)
        if pad_h or pad_w:
            x = x[:, :H, :W]
        return x.reshape(B, N, C)

    def extra_repr(self) -> str:
        return f'dim={self.dim}, num_heads={self.num_heads}, split_size={self.split_size}, ' \
               f'orientation={self.orientation}'


class FocusedLinearBranch(FocusedLinearCore):
    """Focused linear attention over the whole stage map, plus CSwin's LePE conv (official CSwin FLA module).

    Output: FLA(q, k + pos, v) + DWC(v) + LePE(v); the positional encoding is resized to the live grid.
    """

    def __init__(self, dim: int, num_heads: int, grid_size, focusing_factor: float = 3, kernel_size: int = 5,
                 attn_drop: float = 0.):
        super().__init__(dim, num_heads, grid_size, focusing_factor=focusing_factor, kernel_size=kernel_size)
        self.get_v = nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=1, groups=dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, hw: Sequence[int]) -> torch.Tensor:
        hw = to_hw(hw)
        return depthwise_conv_tokens(v, self.get_v.weight, self.get_v.bias, hw, self.attend(q, k, v, hw))  # + LePE


class AgentBranch(AgentCore):
    """Agent attention over the whole stage map, plus CSwin's LePE conv (official CSwin agent module).

    Output: AgentAttention(q, k, v) + LePE(v); the agent biases are resized to the live grid.
    """

    def __init__(self, dim: int, num_heads: int, grid_size, agent_num: int = 49, attn_drop: float = 0.):
        super().__init__(dim, num_heads, grid_size, agent_num=agent_num, attn_drop=attn_drop)
        self.get_v = nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=1, groups=dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, hw: Sequence[int]) -> torch.Tensor:
        hw = to_hw(hw)
        return depthwise_conv_tokens(v, self.get_v.weight, self.get_v.bias, hw, self.attend(q, k, v, hw))  # + LePE


class CSWinBlock(nn.Module):
    """CSwin block: one qkv projection, the attention branches on channel halves (or one branch), proj, MLP.

    Args:
        dim, num_heads, mlp_ratio, qkv_bias, proj_drop, attn_drop, drop_path, act_layer, norm_layer: usual.
        attn: ``'lepe'``, ``'flatten'`` or ``'agent'``.
        grid_size: the stage grid at the default resolution (sizes the positional parameters).
        split_size: CSwin stripe width (``'lepe'`` only).
        single_branch: one branch over the whole map instead of two stripe branches (``'lepe'`` only; the
            linear attentions always run as one global branch).
        attn_kwargs: extra arguments of the attention (``focusing_factor``, ``kernel_size``, ``agent_num``).
    """

    def __init__(self, dim: int, num_heads: int, attn: str = 'lepe', grid_size=56, split_size: int = 7,
                 single_branch: bool = False, mlp_ratio: float = 4., qkv_bias: bool = True, proj_drop: float = 0.,
                 attn_drop: float = 0., drop_path: float = 0., act_layer=nn.GELU, norm_layer=LayerNorm,
                 **attn_kwargs):
        super().__init__()
        if attn not in ATTN_KINDS:
            raise ValueError(f'attn must be one of {ATTN_KINDS}, got {attn!r}')
        self.dim = dim
        self.num_heads = num_heads
        self.norm1 = norm_layer(dim)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        if attn == 'lepe':
            if single_branch:
                branches = [LePEAttention(dim, num_heads, split_size, None, attn_drop=attn_drop)]
            else:
                branches = [LePEAttention(dim // 2, num_heads // 2, split_size, orientation, attn_drop=attn_drop)
                            for orientation in ('vertical', 'horizontal')]
        elif attn == 'flatten':
            branches = [FocusedLinearBranch(dim, num_heads, grid_size, attn_drop=attn_drop, **attn_kwargs)]
        else:
            branches = [AgentBranch(dim, num_heads, grid_size, attn_drop=attn_drop, **attn_kwargs)]
        self.attns = nn.ModuleList(branches)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop)

    def forward(self, x: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(B, N, 3, C).unbind(2)
        if len(self.attns) == 2:
            half = C // 2
            attended = torch.cat([
                self.attns[0](q[..., :half], k[..., :half], v[..., :half], hw),
                self.attns[1](q[..., half:], k[..., half:], v[..., half:], hw),
            ], dim=-1)
        else:
            attended = self.attns[0](q, k, v, hw)
        x = x + self.drop_path(self.proj_drop(self.proj(attended)))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x


class TokensFromMap(nn.Module):
    """(B, C, H, W) -> (B, H*W, C); holds slot 1 of ``stage1_conv_embed`` like the official einops Rearrange."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _from_map(x)


class MergeBlock(nn.Module):
    """3x3 stride-2 conv between stages, then LayerNorm (official ``Merge_Block``)."""

    def __init__(self, dim: int, dim_out: int, norm_layer=LayerNorm):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim_out, 3, 2, 1)
        self.norm = norm_layer(dim_out)

    def forward(self, x: torch.Tensor, hw: Tuple[int, int]) -> Tuple[torch.Tensor, Tuple[int, int]]:
        x = self.conv(_to_map(x, hw))
        hw = (x.shape[-2], x.shape[-1])
        return self.norm(_from_map(x)), hw


class CSWinTransformer(TimmApiMixin, nn.Module):
    """CSWin Transformer with a per-stage choice of attention.

    Args:
        img_size: default input size (sizes the positional parameters of the linear attentions).
        in_chans, num_classes, global_pool: usual (``global_pool`` is ``'avg'`` or ``''``).
        embed_dim: channels of stage 1 (doubled at every stage).
        depth: blocks per stage.
        split_size: CSwin stripe width per stage (``'lepe'`` stages).
        num_heads: heads per stage.
        stage_attn: attention per stage, from ``'lepe'``, ``'flatten'``, ``'agent'``.
        agent_num: agents per stage (``'agent'`` stages).
        focusing_factor, kernel_size: focused linear attention settings (``'flatten'`` stages).
        mlp_ratio, qkv_bias, drop_rate, proj_drop_rate, attn_drop_rate, drop_path_rate, norm_layer: usual.
    """
    pool_dims = (1,)  # forward_features is (B, H*W, C)

    def __init__(
            self,
            img_size: Union[int, Tuple[int, int]] = 224,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            embed_dim: int = 64,
            depth: Sequence[int] = (2, 4, 18, 1),
            split_size: Sequence[int] = (1, 2, 7, 7),
            num_heads: Sequence[int] = (2, 4, 8, 16),
            stage_attn: Sequence[str] = ('lepe', 'lepe', 'lepe', 'lepe'),
            agent_num: Sequence[int] = (9, 16, 49, 49),
            focusing_factor: float = 3,
            kernel_size: int = 5,
            mlp_ratio: float = 4.,
            qkv_bias: bool = True,
            drop_rate: float = 0.,
            proj_drop_rate: float = 0.,
            attn_drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            norm_layer=LayerNorm,
    ):
        super().__init__()
        self._check_global_pool(global_pool)
        for name, seq in (('depth', depth), ('split_size', split_size), ('num_heads', num_heads),
                          ('stage_attn', stage_attn), ('agent_num', agent_num)):
            if len(seq) != 4:
                raise ValueError(f'{name} needs one entry per stage (4), got {list(seq)}')
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.img_size = to_hw(img_size)
        self.grad_checkpointing = False
        self.num_stages = 4
        dims = [embed_dim * 2 ** i for i in range(4)]
        self.num_features = self.head_hidden_size = dims[-1]
        self.embed_dim = embed_dim

        self.stage1_conv_embed = nn.Sequential(
            nn.Conv2d(in_chans, embed_dim, 7, 4, 2),
            TokensFromMap(),
            LayerNorm(embed_dim),
        )
        dpr = calculate_drop_path_rates(drop_path_rate, sum(depth))
        grid = ((self.img_size[0] - 3) // 4 + 1, (self.img_size[1] - 3) // 4 + 1)  # stem output
        self.feature_info = []
        block_idx = 0
        for i in range(4):
            if i > 0:
                setattr(self, f'merge{i}', MergeBlock(dims[i - 1], dims[i], norm_layer=norm_layer))
                grid = ((grid[0] - 1) // 2 + 1, (grid[1] - 1) // 2 + 1)
            attn = stage_attn[i]
            # the official blocks run one stripe over the whole map where the stripe covers it (and always in the
            # last stage); linear attentions always run as one global branch
            single = i == 3 or split_size[i] >= max(grid)
            attn_kwargs = {}
            if attn == 'flatten':
                attn_kwargs = dict(focusing_factor=focusing_factor, kernel_size=kernel_size)
            elif attn == 'agent':
                attn_kwargs = dict(agent_num=int(agent_num[i]))
            blocks = nn.ModuleList([
                CSWinBlock(
                    dims[i], num_heads[i], attn=attn, grid_size=grid, split_size=split_size[i],
                    single_branch=single, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, proj_drop=proj_drop_rate,
                    attn_drop=attn_drop_rate, drop_path=dpr[block_idx + j], norm_layer=norm_layer, **attn_kwargs)
                for j in range(depth[i])])
            setattr(self, f'stage{i + 1}', blocks)
            block_idx += depth[i]
            self.feature_info.append(dict(num_chs=dims[i], reduction=4 * 2 ** i, module=f'stage{i + 1}'))

        self.norm = norm_layer(dims[-1])
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    # ----------------------------------------------------------------------------------------------- timm API
    # set_grad_checkpointing, get/reset_classifier, forward_head, forward: TimmApiMixin
    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        # the official models list only names CSwin does not have ({'pos_embed', 'cls_token'}): they decay the
        # positional encodings, focusing scales and agent biases like any other weight
        return set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(
            stem=r'^stage1_conv_embed',
            blocks=[
                (r'^stage(\d+)\.' if coarse else r'^stage(\d+)\.(\d+)\.', None),
                (r'^merge(\d+)\.', (99998,)),  # merge i sits between stage i and stage i + 1
                (r'^norm\.', (99999,)),
            ],
        )

    # -------------------------------------------------------------------------------------------- forward
    def _stem(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        check_min_input_size(self, tuple(x.shape[-2:]), (4, 4))  # below the stem's stride there is no token
        x = self.stage1_conv_embed[0](x)
        hw = (x.shape[-2], x.shape[-1])
        x = self.stage1_conv_embed[2](self.stage1_conv_embed[1](x))
        return x, hw

    def _run_stage(self, i: int, x: torch.Tensor, hw: Tuple[int, int]):
        if i > 0:
            x, hw = getattr(self, f'merge{i}')(x, hw)
        for blk in getattr(self, f'stage{i + 1}'):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = torch.utils.checkpoint.checkpoint(blk, x, hw, use_reentrant=False)
            else:
                x = blk(x, hw)
        return x, hw

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Final-stage tokens after the norm, (B, H*W, C)."""
        x, hw = self._stem(x)
        for i in range(self.num_stages):
            x, hw = self._run_stage(i, x, hw)
        return self.norm(x)

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Stage outputs as NCHW maps (the final norm applies to the last stage only, when ``norm``)."""
        if output_fmt not in ('NCHW', 'NLC'):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        intermediates = []
        x, hw = self._stem(x)
        last = max_index if stop_early else self.num_stages - 1
        for i in range(last + 1):
            x, hw = self._run_stage(i, x, hw)
            if i in take_indices:
                y = self.norm(x) if norm and i == self.num_stages - 1 else x
                intermediates.append(_to_map(y, hw).contiguous() if output_fmt == 'NCHW' else y)
        if intermediates_only:
            return intermediates
        if last == self.num_stages - 1:
            x = self.norm(x)
        return x, intermediates

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        prune_end = drop_stages_after(self, max_index, lambda i: (f'stage{i + 1}', f'merge{i}'))
        if prune_norm or prune_end:
            self.norm = nn.Identity()  # sized for the last stage only
        if prune_head or prune_end:
            self.reset_classifier(0, '')
        return take_indices


# ------------------------------------------------------------------------------------------ checkpoints
def extract_weights(checkpoint: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    """The weights of an official release file (EMA weights where the file has them) or a bare state dict."""
    wrapped = any(k in checkpoint for k in ('model', 'state_dict', 'state_dict_ema', 'model_ema'))
    return extract_state_dict(checkpoint, prefer_ema=wrapped)


def resize_grid_params(state_dict: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """Resize the learned grid parameters of the linear attentions to the model's default grids.

    Focused linear ``positional_encoding`` (a square grid in every official file) is resized bicubic on its grid,
    the agent row / column biases (``ah``/``aw``/``ha``/``wa``) linearly along their axis. ``an_bias`` /
    ``na_bias`` live on a fixed 7x7 grid and never change shape.
    """
    owners = {name: m for name, m in model.named_modules() if isinstance(m, (FocusedLinearCore, AgentCore))}
    own = model.state_dict()
    out = {}
    for k, v in state_dict.items():
        if k in own and v.shape != own[k].shape and '.' in k:
            module_name, param = k.rsplit('.', 1)
            m = owners.get(module_name)
            if isinstance(m, FocusedLinearCore) and param == 'positional_encoding':
                v = resize_tokens_grid(v, _square_grid(v.shape[1], k), m.grid_size, 'bicubic')
            elif isinstance(m, AgentCore) and param in _AGENT_AXIS:
                axis, which = _AGENT_AXIS[param]
                grid = m.kv_grid_size if param in ('ah_bias', 'aw_bias') else m.grid_size
                v = resize_axis(v, axis, grid[which])
        out[k] = v
    return out


# agent bias -> (axis that runs along the grid, 0 for rows / 1 for columns)
_AGENT_AXIS = {'ah_bias': (3, 0), 'aw_bias': (4, 1), 'ha_bias': (2, 0), 'wa_bias': (3, 1)}


def _square_grid(n: int, key: str) -> Tuple[int, int]:
    side = int(round(n ** 0.5))
    if side * side != n:
        raise CheckpointError(f'{key}: {n} positions do not form a square grid, cannot resize')
    return side, side


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: CSWinTransformer) -> Dict[str, torch.Tensor]:
    """Official FLatten / Agent CSwin checkpoint (or its state dict) -> this model's state dict.

    Keys are the official ones; what changes is the resolution: positional encodings and agent biases are resized
    to the model's default grids (:func:`resize_grid_params`). The classifier may differ in size (timm replaces it
    when ``num_classes`` differs); every other key and shape must fit, else a
    :class:`~linattn_vision.checkpoint.CheckpointError` names the offending keys.
    """
    out = resize_grid_params(extract_weights(state_dict), model)
    check_fits_ignoring_classifier(model, out, source=f'checkpoint for {model_name(model)}')
    return out


# --------------------------------------------------------------------------------------------- variants
def _create_cswin(variant: str, pretrained: bool = False, **kwargs) -> CSWinTransformer:
    out_indices = kwargs.pop('out_indices', (0, 1, 2, 3))
    return build_official_model(CSWinTransformer, variant, pretrained, filter_fn=checkpoint_filter_fn,
                                feature_cfg=dict(feature_cls='getter', out_indices=out_indices), **kwargs)


def _cfg(**kwargs) -> Dict[str, Any]:
    # eval crop 0.875 at every size: the official repos resize to 256/224 of the input and centre-crop
    return make_cfg(**{'pool_size': (7, 7), 'first_conv': 'stage1_conv_embed.0', 'min_input_size': (3, 4, 4), **kwargs})


default_cfgs = generate_default_cfgs({
    'flatten_cswin_t.in1k': _cfg(**flatten_release()),
    'flatten_cswin_s.in1k': _cfg(**flatten_release(linked=False)),
    'flatten_cswin_b.in1k': _cfg(**flatten_release(linked=False)),
    'flatten_cswin_b_384.in1k': _cfg(**flatten_release(linked=False), input_size=(3, 384, 384),
                                     pool_size=(12, 12)),
    'agent_cswin_t.in1k': _cfg(**agent_release('8c562a74441e46d5902b')),
    'agent_cswin_s.in1k': _cfg(**agent_release('30eb8af675bc4b7a8747')),
    'agent_cswin_b.in1k': _cfg(**agent_release('c8035b0839b2410c8c9f')),
    'agent_cswin_b_384.in1k': _cfg(**agent_release('1239be0df44b47719432'), input_size=(3, 384, 384),
                                   pool_size=(12, 12)),
})

# official configs: cfgs/flatten_cswin_*.yaml (ATTN_TYPE LLSS) and agent_cswin_*.yaml (AABB, NUM 9-16-49-49)
_FLATTEN_ARGS = dict(stage_attn=('flatten', 'flatten', 'lepe', 'lepe'))
_AGENT_ARGS = dict(stage_attn=('agent', 'agent', 'lepe', 'lepe'), agent_num=(9, 16, 49, 49))
_TINY = dict(embed_dim=64, depth=(2, 4, 18, 1), num_heads=(2, 4, 8, 16), split_size=(1, 2, 7, 7))
_BASE = dict(embed_dim=96, depth=(3, 6, 29, 2), num_heads=(4, 8, 16, 32), split_size=(1, 2, 7, 7))
_BASE_384 = dict(_BASE, split_size=(1, 2, 12, 12), img_size=384)


@register_model
def flatten_cswin_t(pretrained: bool = False, **kwargs) -> CSWinTransformer:
    args = dict(_TINY, **_FLATTEN_ARGS, drop_path_rate=0.2)
    return _create_cswin('flatten_cswin_t', pretrained, **dict(args, **kwargs))


@register_model
def flatten_cswin_s(pretrained: bool = False, **kwargs) -> CSWinTransformer:
    args = dict(_TINY, depth=(2, 4, 32, 2), **_FLATTEN_ARGS, drop_path_rate=0.4)
    return _create_cswin('flatten_cswin_s', pretrained, **dict(args, **kwargs))


@register_model
def flatten_cswin_b(pretrained: bool = False, **kwargs) -> CSWinTransformer:
    args = dict(_BASE, **_FLATTEN_ARGS, drop_path_rate=0.5)
    return _create_cswin('flatten_cswin_b', pretrained, **dict(args, **kwargs))


@register_model
def flatten_cswin_b_384(pretrained: bool = False, **kwargs) -> CSWinTransformer:
    args = dict(_BASE_384, **_FLATTEN_ARGS, drop_path_rate=0.7)
    return _create_cswin('flatten_cswin_b_384', pretrained, **dict(args, **kwargs))


@register_model
def agent_cswin_t(pretrained: bool = False, **kwargs) -> CSWinTransformer:
    args = dict(_TINY, **_AGENT_ARGS, drop_path_rate=0.2)
    return _create_cswin('agent_cswin_t', pretrained, **dict(args, **kwargs))


@register_model
def agent_cswin_s(pretrained: bool = False, **kwargs) -> CSWinTransformer:
    # official Agent_CSWin_64_36292_small_224: the base depths at tiny width
    args = dict(_TINY, depth=(3, 6, 29, 2), **_AGENT_ARGS, drop_path_rate=0.4)
    return _create_cswin('agent_cswin_s', pretrained, **dict(args, **kwargs))


@register_model
def agent_cswin_b(pretrained: bool = False, **kwargs) -> CSWinTransformer:
    args = dict(_BASE, **_AGENT_ARGS, drop_path_rate=0.5)
    return _create_cswin('agent_cswin_b', pretrained, **dict(args, **kwargs))


@register_model
def agent_cswin_b_384(pretrained: bool = False, **kwargs) -> CSWinTransformer:
    args = dict(_BASE_384, **_AGENT_ARGS, drop_path_rate=0.7)
    return _create_cswin('agent_cswin_b_384', pretrained, **dict(args, **kwargs))
