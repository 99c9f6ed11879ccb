""" Swin Transformer with focused linear attention (FLatten) or agent attention in its early stages.

Papers:
* `Swin Transformer: Hierarchical Vision Transformer using Shifted Windows` - https://arxiv.org/abs/2103.14030
* `FLatten Transformer: Vision Transformer using Focused Linear Attention` (ICCV 2023) - https://arxiv.org/abs/2308.00442
* `Agent Attention: On the Integration of Softmax and Linear Attention` (ECCV 2024) - https://arxiv.org/abs/2312.08874

One skeleton, the attention of every block a parameter:

* ``'flatten'``: :class:`~linattn_vision.layers.FocusedLinearAttention` over the whole stage map (the official
  models set a window as large as the map: 56 at 224, 96 at 384).
* ``'agent'``: :class:`~linattn_vision.layers.AgentAttention` over the whole stage map (or, with ``agent_window``,
  inside windows of that size).
* ``'window'``: Swin's (shifted) window softmax attention with a relative position bias.

Variants as the official configs (LeapLabTHU/FLatten-Transformer ``cfgs/flatten_swin_*.yaml``,
LeapLabTHU/Agent-Attention ``agent_transformer/cfgs/agent_swin_*.yaml``): FLatten uses ``LLSS``, Agent-T ``AAAB``,
Agent-S ``AABB``, Agent-B ``AA`` + two agent blocks then windows in stage 3 + ``B``; the window of the softmax
blocks is 7 (9 at 288, 12 at 384). State-dict keys are the official ones (``layers.{i}.blocks.{j}``, the patch
merging ``layers.{i}.downsample`` at the end of stage ``i``), so the release files load strictly through
``checkpoint_filter_fn``, which drops the official buffers and resizes grid-shaped parameters when the resolution
differs.

Any input size works: inputs and odd maps are zero-padded to the patch / merge size, the global attentions
resize their position parameters to the live map, and windows follow the map (a map smaller than the window
is one window; otherwise the map is padded to whole windows).

Detection / segmentation (LeapLabTHU/Agent-Attention ``downstream/*/agent_swin.py``): ``downstream_agent_shapes``
pools more agents per stage on the larger maps (Agent-Swin-T: 9x9, 12x12, 14x14, 7x7 from 3x3, 4x4, 7x7, 7x7),
the ImageNet agent biases interpolated to that agent grid at run time, so ImageNet checkpoints load unchanged.
The official backbones still run agent attention over the whole map (their ``window_size=56`` only sets the
softmax window, 56 // 8 = 7); ``agent_window`` optionally restricts it to windows.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_
from timm.models import checkpoint, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from ..layers import (
    AgentAttention, FocusedLinearAttention, GridCache, LayerNorm, memoize, relative_position_index, resize_axis,
    resize_rel_pos_table, resize_tokens_grid, to_hw,
)
from ..ops import softmax_attention
from ._builder import (
    TimmApiMixin, agent_release, build_official_model, check_fits_ignoring_classifier, check_min_input_size,
    flatten_release, make_cfg, official_state_dict, pad_to_patches, per_stage,
)

__all__ = ['SwinTransformer', 'checkpoint_filter_fn']

ATTN_TYPES = ('flatten', 'agent', 'window')
SHIFT_MASK_VALUE = -100.0  # the official mask value (not -inf)


def pad_to_windows(x: torch.Tensor, window: Tuple[int, int]) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """(B, H, W, C) zero-padded at the bottom and right to whole windows, and its (Hp, Wp). A map of whole windows
    keeps H and W as they are: under torch.compile with symbolic sizes, H + (-H % w) is an expression whose window
    reshapes keep the shape solver busy (a small FLatten-Swin's recompile for a new image size, AOT autograd on 2
    CPU cores: 270 s with it, 165 s without)."""
    H, W = x.shape[1:3]
    pad_h, pad_w = (-H) % window[0], (-W) % window[1]
    if pad_h or pad_w:
        return F.pad(x, (0, 0, 0, pad_w, 0, pad_h)), (H + pad_h, W + pad_w)
    return x, (H, W)


def window_partition(x: torch.Tensor, window: Tuple[int, int]) -> torch.Tensor:
    """(B, H, W, C) -> (B, num_windows, wh*ww, C); H and W multiples of the window."""
    B, H, W, C = x.shape
    wh, ww = window
    x = x.reshape(B, H // wh, wh, W // ww, ww, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, (H // wh) * (W // ww), wh * ww, C)


def window_reverse(windows: torch.Tensor, window: Tuple[int, int], H: int, W: int) -> torch.Tensor:
    """(B, num_windows, wh*ww, C) -> (B, H, W, C)."""
    B, _, _, C = windows.shape
    wh, ww = window
    x = windows.reshape(B, H // wh, W // ww, wh, ww, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, H, W, C)


class WindowAttention(nn.Module):
    """Window softmax attention with Swin's relative position bias (official names: ``qkv``, ``proj``,
    ``relative_position_bias_table``).

    A window smaller than the trained one (a small feature map) indexes the same bias table: every token pair
    keeps the bias learned for its relative offset.
    """

    def __init__(self, dim: int, num_heads: int, window_size, qkv_bias: bool = True, attn_drop: float = 0.,
                 proj_drop: float = 0.):
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.window_size = to_hw(window_size)
        wh, ww = self.window_size
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * wh - 1) * (2 * ww - 1), num_heads))
        self._index_cache: Dict[tuple, torch.Tensor] = {}  # no buffer: models built on 'meta' stay valid
        self._bias_cache = GridCache()
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        trunc_normal_(self.relative_position_bias_table, std=.02)

    def relative_position_bias(self, window: Tuple[int, int]) -> torch.Tensor:
        """(1, heads, N, N) bias for a (wh, ww) window (cached per window when no gradient is needed)."""
        return self._bias_cache.get(window, (self.relative_position_bias_table,), lambda: self._gather_bias(window))

    def _gather_bias(self, window: Tuple[int, int]) -> torch.Tensor:
        device = self.relative_position_bias_table.device
        index = memoize(self._index_cache, (window, device),
                        lambda: relative_position_index(window, self.window_size).to(device))
        n = window[0] * window[1]
        bias = self.relative_position_bias_table[index.reshape(-1)].reshape(n, n, self.num_heads)
        return bias.permute(2, 0, 1).unsqueeze(0)

    def attention_bias(self, window: Tuple[int, int], mask: Optional[torch.Tensor], dtype) -> torch.Tensor:
        """SDPA's additive bias in ``dtype``: the relative position bias (1, heads, N, N), or with a shift mask
        (num_windows, N, N) the sum with windows and heads on one axis (1, num_windows * heads, N, N), so that it
        broadcasts over the batch only. Cached like the position bias (the cache keeps the mask, so its id in the
        key is not reused while the entry lives)."""
        def build():
            bias = self.relative_position_bias(window)
            if mask is not None:
                bias = (mask.unsqueeze(1) + bias).flatten(0, 1).unsqueeze(0)
            # contiguous: SDPA's efficient kernel refuses a bias whose last dim is strided (the gathered table is)
            return bias.to(dtype, memory_format=torch.contiguous_format), mask
        if torch.compiler.is_compiling():  # traced into the graph (GridCache would build it anyway); no id() key
            return build()[0]
        key = ('sdpa', window, None if mask is None else id(mask), dtype)
        return self._bias_cache.get(key, (self.relative_position_bias_table,), build)[0]

    def forward(self, x: torch.Tensor, window: Tuple[int, int], mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: (B, num_windows, N, C); mask: additive (num_windows, N, N) shift mask or None."""
        B, nW, N, C = x.shape
        h, d = self.num_heads, self.head_dim
        # one copy of q, k, v into (3, B, nW, h, N, d): the shifted blocks' merged (windows x heads) axis needs a
        # copy anyway, and both layouts below are then views
        q, k, v = self.qkv(x).reshape(B, nW, N, 3, h, d).permute(3, 0, 1, 4, 2, 5).contiguous().unbind(0)
        if mask is not None:
            q, k, v = (t.reshape(B, nW * h, N, d) for t in (q, k, v))
        else:
            q, k, v = (t.reshape(B * nW, h, N, d) for t in (q, k, v))
        x = softmax_attention(q, k, v, self.attention_bias(window, mask, q.dtype),
                              dropout_p=self.attn_drop if self.training else 0., scale=self.scale)
        x = x.reshape(B, nW, h, N, d).transpose(2, 3).reshape(B, nW, N, C)
        return self.proj_drop(self.proj(x))

    def extra_repr(self) -> str:
        return f'dim={self.dim}, window_size={self.window_size}, num_heads={self.num_heads}'


class SwinBlock(nn.Module):
    """Pre-norm Swin block on an NHWC map; the token mixer is global (``'flatten'``/``'agent'``, the whole map)
    or a (shifted) window softmax attention (``'window'``)."""

    def __init__(
            self,
            dim: int,
            num_heads: int,
            grid_size: Tuple[int, int],
            attn_type: str = 'window',
            window_size: int = 7,
            shift: bool = False,
            agent_num: int = 49,
            agent_shape: Optional[Tuple[int, int]] = None,
            agent_window: Optional[int] = None,
            focusing_factor: float = 3,
            kernel_size: int = 5,
            mlp_ratio: float = 4.,
            qkv_bias: bool = True,
            proj_drop: float = 0.,
            attn_drop: float = 0.,
            drop_path: float = 0.,
            act_layer: Callable[..., nn.Module] = nn.GELU,
            norm_layer: Callable[..., nn.Module] = LayerNorm,
    ):
        super().__init__()
        if attn_type not in ATTN_TYPES:
            raise ValueError(f'unknown attention type {attn_type!r}; expected one of {ATTN_TYPES}')
        if agent_window is not None and agent_window < 1:
            raise ValueError(f'agent_window must be a positive size or None, got {agent_window}')
        self.attn_type = attn_type
        self.window_size = window_size
        self.agent_window = agent_window if attn_type == 'agent' else None  # other blocks ignore it
        self.shift_size = window_size // 2 if shift and attn_type == 'window' else 0
        self.norm1 = norm_layer(dim)
        if attn_type == 'flatten':
            self.attn = FocusedLinearAttention(
                dim, num_heads, grid_size, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=proj_drop,
                focusing_factor=focusing_factor, kernel_size=kernel_size)
        elif attn_type == 'agent':
            self.attn = AgentAttention(
                dim, num_heads, grid_size, agent_num=agent_num, qkv_bias=qkv_bias, attn_drop=attn_drop,
                proj_drop=proj_drop, agent_shape=agent_shape)
        else:
            self.attn = WindowAttention(dim, num_heads, window_size, qkv_bias=qkv_bias, attn_drop=attn_drop,
                                        proj_drop=proj_drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop)
        self._mask_cache: Dict[tuple, torch.Tensor] = {}

    def window_and_shift(self, H: int, W: int) -> Tuple[Tuple[int, int], Tuple[int, int]]:
        """Per axis: a map no larger than the window is one window, unshifted (as the official clamp)."""
        ws, s = self.window_size, self.shift_size
        window = (min(H, ws), min(W, ws))
        shift = (s if H > ws else 0, s if W > ws else 0)
        return window, shift

    def shift_mask(self, Hp: int, Wp: int, window, shift, device) -> torch.Tensor:
        """Additive (num_windows, N, N) mask keeping attention inside the regions of the rolled map."""
        def build():
            img = torch.zeros(Hp, Wp, device=device)

            def slices(size, win, sh):
                if not sh:
                    return (slice(0, size),)
                return slice(0, -win), slice(-win, -sh), slice(-sh, None)

            cnt = 0
            for hs in slices(Hp, window[0], shift[0]):
                for ws in slices(Wp, window[1], shift[1]):
                    img[hs, ws] = cnt
                    cnt += 1
            regions = window_partition(img[None, :, :, None], window)[0, :, :, 0]  # nW N
            mask = regions.unsqueeze(1) - regions.unsqueeze(2)
            return mask.masked_fill(mask != 0, SHIFT_MASK_VALUE)
        return memoize(self._mask_cache, (Hp, Wp, window, shift, device), build)

    def _window_attn(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        window, shift = self.window_and_shift(H, W)
        x, (Hp, Wp) = pad_to_windows(x, window)
        shifted = any(shift)
        if shifted:
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        mask = self.shift_mask(Hp, Wp, window, shift, x.device) if shifted else None
        x = window_reverse(self.attn(window_partition(x, window), window, mask), window, Hp, Wp)
        if shifted:
            x = torch.roll(x, shifts=shift, dims=(1, 2))
        return x[:, :H, :W]

    def _agent_window_attn(self, x: torch.Tensor) -> torch.Tensor:
        """Agent attention inside non-overlapping ``agent_window`` windows (zero-padded to whole windows; a map
        no larger than the window is one window, i.e. the whole-map attention)."""
        B, H, W, C = x.shape
        window = (min(H, self.agent_window), min(W, self.agent_window))
        x, (Hp, Wp) = pad_to_windows(x, window)
        windows = window_partition(x, window)
        nW, N = windows.shape[1:3]
        windows = self.attn(windows.reshape(B * nW, N, C), window).reshape(B, nW, N, C)
        return window_reverse(windows, window, Hp, Wp)[:, :H, :W]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        y = self.norm1(x)
        if self.attn_type == 'window':
            y = self._window_attn(y)
        elif self.agent_window is not None:
            y = self._agent_window_attn(y)
        else:
            y = self.attn(y.reshape(B, H * W, C), (H, W)).reshape(B, H, W, C)
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchMerging(nn.Module):
    """2x2 neighbourhood concat (official order: (0,0), (1,0), (0,1), (1,1)), LayerNorm, linear 4C -> 2C.
    Odd maps are zero-padded on the bottom / right."""

    def __init__(self, dim: int, norm_layer: Callable[..., nn.Module] = LayerNorm):
        super().__init__()
        self.norm = norm_layer(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = pad_to_windows(x, (2, 2))
        B, H, W, C = x.shape
        # (B, H/2, 2, W/2, 2, C) -> (B, H/2, W/2, col offset, row offset, C): the official order by one view and
        # permute, as timm's Swin, not a cat of four strided slices (whose gradient inductor built from slice
        # scatters, in a column-major layout while its layout optimisation was on)
        x = x.reshape(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.reduction(self.norm(x))


class PatchEmbed(nn.Module):
    """Non-overlapping patches (strided conv) + LayerNorm, NCHW image -> NHWC map; pads to whole patches."""

    def __init__(self, patch_size: int = 4, in_chans: int = 3, embed_dim: int = 96,
                 norm_layer: Optional[Callable[..., nn.Module]] = LayerNorm):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = norm_layer(embed_dim) if norm_layer else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(pad_to_patches(x, self.patch_size)).permute(0, 2, 3, 1))


class SwinStage(nn.Module):
    """The blocks of one stage, and the patch merging that ends it (official layout).

    ``forward`` runs the blocks only; the model applies ``downsample`` after taking the stage's features.
    """

    def __init__(self, dim: int, depth: int, num_heads: int, grid_size: Tuple[int, int], attn_types: Sequence[str],
                 downsample: bool, drop_path: Sequence[float], norm_layer: Callable[..., nn.Module], **block_kwargs):
        super().__init__()
        self.grad_checkpointing = False
        self.blocks = nn.ModuleList([
            SwinBlock(dim, num_heads, grid_size, attn_type=attn_types[j], shift=j % 2 == 1,
                      drop_path=drop_path[j], norm_layer=norm_layer, **block_kwargs)
            for j in range(depth)])
        self.downsample = PatchMerging(dim, norm_layer=norm_layer) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(blk, x)
            else:
                x = blk(x)
        return x


def _stage_attn_types(attn, depths: Sequence[int]) -> List[Tuple[str, ...]]:
    """Per-stage attention spec -> one attention type per block.

    A stage entry is one type for all its blocks, or a sequence with one type per block.
    """
    if len(attn) != len(depths):
        raise ValueError(f'attn_types has {len(attn)} entries, expected one per stage ({len(depths)})')
    out = []
    for i, (spec, depth) in enumerate(zip(attn, depths)):
        types = (spec,) * depth if isinstance(spec, str) else tuple(spec)
        if len(types) != depth:
            raise ValueError(f'stage {i}: {len(types)} attention types for {depth} blocks')
        for t in types:
            if t not in ATTN_TYPES:
                raise ValueError(f'stage {i}: unknown attention type {t!r}; expected one of {ATTN_TYPES}')
        out.append(types)
    return out


class SwinTransformer(TimmApiMixin, nn.Module):
    """Swin Transformer skeleton with a per-block choice of attention.

    Args:
        img_size: training resolution; sizes the grid-shaped parameters of the global attentions (positional
            encodings, agent biases). Other input sizes work: those are resized to the live map.
        patch_size, in_chans, num_classes, global_pool ('avg' or ''), embed_dim, depths, num_heads, mlp_ratio,
            qkv_bias, drop_rate (head dropout), proj_drop_rate, attn_drop_rate, drop_path_rate, norm_layer: as timm.
        window_size: window of the ``'window'`` (softmax) blocks.
        attn_types: per stage, ``'flatten'`` | ``'agent'`` | ``'window'`` or a sequence with one per block.
        agent_num: agents per stage for ``'agent'`` blocks (one int, or one per stage); sizes the agent biases.
        downstream_agent_shapes: per stage, the (h, w) grid the agents are pooled on (None: the trained
            sqrt(agent_num) square); the agent biases keep their shapes and are interpolated to it. The official
            detection / segmentation settings pool more agents, e.g. ((9, 9), (12, 12), (14, 14), (7, 7)).
        agent_window: window of the ``'agent'`` blocks, one int or one per stage (None: the whole map).
        focusing_factor, kernel_size: focused linear attention focusing power and DWC kernel.
    """
    pool_dims = (1, 2)  # forward_features is NHWC

    def __init__(
            self,
            img_size: Union[int, Tuple[int, int]] = 224,
            patch_size: int = 4,
            in_chans: int = 3,
            num_classes: int = 1000,
            global_pool: str = 'avg',
            embed_dim: int = 96,
            depths: Sequence[int] = (2, 2, 6, 2),
            num_heads: Sequence[int] = (3, 6, 12, 24),
            window_size: int = 7,
            attn_types: Sequence[Union[str, Sequence[str]]] = ('flatten', 'flatten', 'window', 'window'),
            agent_num: Union[int, Sequence[int]] = (9, 16, 49, 49),
            downstream_agent_shapes: Optional[Sequence[Optional[Union[int, Tuple[int, int]]]]] = None,
            agent_window: Optional[Union[int, Sequence[Optional[int]]]] = None,
            focusing_factor: float = 3,
            kernel_size: int = 5,
            mlp_ratio: float = 4.,
            qkv_bias: bool = True,
            drop_rate: float = 0.,
            proj_drop_rate: float = 0.,
            attn_drop_rate: float = 0.,
            drop_path_rate: float = 0.1,
            norm_layer: Callable[..., nn.Module] = LayerNorm,
    ):
        super().__init__()
        self._check_global_pool(global_pool)
        num_stages = len(depths)
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.patch_size = patch_size
        self.output_fmt = 'NHWC'
        self.img_size = to_hw(img_size)
        block_attn = _stage_attn_types(attn_types, depths)
        agent_num = tuple(agent_num) if isinstance(agent_num, (list, tuple)) else (agent_num,) * num_stages
        agent_shapes = per_stage(downstream_agent_shapes, num_stages, 'downstream_agent_shapes')
        agent_windows = per_stage(agent_window, num_stages, 'agent_window')
        dims = [int(embed_dim * 2 ** i) for i in range(num_stages)]
        self.num_features = self.head_hidden_size = dims[-1]

        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, norm_layer=norm_layer)
        grid = (-(-self.img_size[0] // patch_size), -(-self.img_size[1] // patch_size))
        dpr = [x.tolist() for x in torch.linspace(0, drop_path_rate, sum(depths), device='cpu').split(list(depths))]
        self.layers = nn.ModuleList()
        self.feature_info = []
        for i in range(num_stages):
            self.layers.append(SwinStage(
                dims[i], depths[i], num_heads[i], grid, block_attn[i], downsample=i < num_stages - 1,
                drop_path=dpr[i], norm_layer=norm_layer, window_size=window_size, agent_num=agent_num[i],
                agent_shape=agent_shapes[i], agent_window=agent_windows[i],
                focusing_factor=focusing_factor, kernel_size=kernel_size, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                proj_drop=proj_drop_rate, attn_drop=attn_drop_rate))
            self.feature_info.append(dict(num_chs=dims[i], reduction=patch_size * 2 ** i, module=f'layers.{i}'))
            grid = (-(-grid[0] // 2), -(-grid[1] // 2))
        self.norm = norm_layer(self.num_features)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    # --- timm model API ---------------------------------------------------------------------------------------
    # (get/reset_classifier, forward_head, forward: TimmApiMixin)

    @torch.jit.ignore
    def no_weight_decay(self):
        """As the official optimizer: no decay on the relative position bias tables."""
        return {n for n, _ in self.named_parameters() if 'relative_position_bias_table' in n}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False):
        return dict(
            stem=r'^patch_embed',
            blocks=r'^layers\.(\d+)' if coarse else [
                (r'^layers\.(\d+)\.blocks\.(\d+)', None),
                (r'^layers\.(\d+)\.downsample', (99998,)),  # the merge ends its stage
                (r'^norm', (99999,)),
            ])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True):
        for stage in self.layers:
            stage.grad_checkpointing = enable

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f'expected an NCHW image batch, got a tensor of shape {tuple(x.shape)}')
        check_min_input_size(self, tuple(x.shape[-2:]), (self.patch_size, self.patch_size))
        return self.patch_embed(x)

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Stage outputs (before each stage's patch merging), NCHW or NHWC.

        Args:
            indices: stages to take (int: the last n; sequence: these, negative from the end; None: all).
            norm: apply the final norm to the last stage's output.
            stop_early: stop after the last stage taken.
            output_fmt: 'NCHW' or 'NHWC'.
            intermediates_only: return the intermediates only.
        """
        if output_fmt not in ('NCHW', 'NHWC'):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.layers), indices)
        last = len(self.layers) - 1
        intermediates = []
        x = self._embed(x)
        stages = self.layers if not stop_early else self.layers[:max_index + 1]
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take_indices:
                feat = self.norm(x) if norm and i == last else x
                intermediates.append(feat.permute(0, 3, 1, 2).contiguous() if output_fmt == 'NCHW' else feat)
            if stage.downsample is not None and i < len(stages) - 1:
                x = stage.downsample(x)
        if intermediates_only:
            return intermediates
        if len(stages) == len(self.layers):
            x = self.norm(x)
        return x, intermediates

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Drop the stages (and the last merge) after the last index taken; optionally the norm and head."""
        take_indices, max_index = feature_take_indices(len(self.layers), indices)
        self.layers = self.layers[:max_index + 1]
        self.layers[-1].downsample = None
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, '')
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self._embed(x)
        for stage in self.layers:
            x = stage(x)
            if stage.downsample is not None:
                x = stage.downsample(x)
        return self.norm(x)  # NHWC


# agent / positional parameters shaped by the token grid: (axis resized, ...) for the checkpoint filter
_GRID_AXES = {'ah_bias': 3, 'aw_bias': 4, 'ha_bias': 2, 'wa_bias': 3}
_DROPPED_BUFFERS = ('relative_position_index', 'attn_mask')


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: SwinTransformer) -> Dict[str, torch.Tensor]:
    """Official FLatten / Agent Swin weights (a release file's dict or its 'model' entry) -> this model.

    Keys are the same; the official buffers (``relative_position_index``, ``attn_mask``) are dropped, and at
    another resolution the positional encodings (bicubic), agent row/column biases (linear) and relative
    position tables (bicubic) are resized to the model's. Raises a CheckpointError naming the first keys that
    still do not fit.
    """
    state_dict = official_state_dict(state_dict)
    own = model.state_dict()
    out = {}
    for k, v in state_dict.items():
        if k.endswith(_DROPPED_BUFFERS):
            continue
        target = own.get(k)
        if target is not None and target.shape != v.shape and v.ndim == target.ndim:
            name = k.rsplit('.', 1)[-1]
            if name == 'positional_encoding':
                side = int(round(v.shape[1] ** 0.5))
                module = model.get_submodule(k.rsplit('.', 1)[0])
                v = resize_tokens_grid(v, (side, side), module.grid_size)
            elif name == 'relative_position_bias_table':
                old = (int(round(v.shape[0] ** 0.5)) + 1) // 2
                new = (int(round(target.shape[0] ** 0.5)) + 1) // 2
                v = resize_rel_pos_table(v, (old, old), (new, new))
            elif name in _GRID_AXES:
                axis = _GRID_AXES[name]
                v = resize_axis(v, axis, target.shape[axis])
        out[k] = v
    check_fits_ignoring_classifier(model, out, source='Swin checkpoint')
    return out


def _create_swin(variant: str, pretrained: bool = False, **kwargs) -> SwinTransformer:
    out_indices = kwargs.pop('out_indices', tuple(range(len(kwargs.get('depths', (2, 2, 6, 2))))))
    return build_official_model(
        SwinTransformer, variant, pretrained, filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=out_indices, feature_cls='getter'), **kwargs)


def _cfg(**kwargs):
    return make_cfg(**{'crop_pct': 0.875, **kwargs})


default_cfgs = generate_default_cfgs({
    'flatten_swin_t.in1k': _cfg(**flatten_release()),
    'flatten_swin_s.in1k': _cfg(**flatten_release()),
    'flatten_swin_b.in1k': _cfg(**flatten_release()),
    'flatten_swin_b_384.in1k': _cfg(**flatten_release(), input_size=(3, 384, 384), crop_pct=1.0),
    'agent_swin_t.in1k': _cfg(**agent_release()),
    'agent_swin_s.in1k': _cfg(**agent_release()),
    'agent_swin_b.in1k': _cfg(**agent_release()),
    'agent_swin_s_288.in1k': _cfg(**agent_release(), input_size=(3, 288, 288), crop_pct=1.0),
    'agent_swin_b_384.in1k': _cfg(**agent_release(), input_size=(3, 384, 384), crop_pct=1.0),
})

_TINY = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
_SMALL = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24))
_BASE = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))
_FLATTEN = ('flatten', 'flatten', 'window', 'window')  # LLSS
_AGENT_NUM = (9, 16, 49, 49)
_AGENT_T = ('agent', 'agent', 'agent', 'window')  # AAAB
_AGENT_S = ('agent', 'agent', 'window', 'window')  # AABB
_AGENT_B = ('agent', 'agent', ('agent',) * 2 + ('window',) * 16, 'window')  # AAMB2


@register_model
def flatten_swin_t(pretrained: bool = False, **kwargs) -> SwinTransformer:
    """FLatten-Swin-T (29M, 4.5 GFLOPs at 224)."""
    args = dict(**_TINY, attn_types=_FLATTEN, window_size=7, drop_path_rate=0.2)
    return _create_swin('flatten_swin_t', pretrained, **dict(args, **kwargs))


@register_model
def flatten_swin_s(pretrained: bool = False, **kwargs) -> SwinTransformer:
    """FLatten-Swin-S."""
    args = dict(**_SMALL, attn_types=_FLATTEN, window_size=7, drop_path_rate=0.3)
    return _create_swin('flatten_swin_s', pretrained, **dict(args, **kwargs))


@register_model
def flatten_swin_b(pretrained: bool = False, **kwargs) -> SwinTransformer:
    """FLatten-Swin-B."""
    args = dict(**_BASE, attn_types=_FLATTEN, window_size=7, drop_path_rate=0.5)
    return _create_swin('flatten_swin_b', pretrained, **dict(args, **kwargs))


@register_model
def flatten_swin_b_384(pretrained: bool = False, **kwargs) -> SwinTransformer:
    """FLatten-Swin-B fine-tuned at 384 (softmax window 12)."""
    args = dict(**_BASE, img_size=384, attn_types=_FLATTEN, window_size=12, drop_path_rate=0.5)
    return _create_swin('flatten_swin_b_384', pretrained, **dict(args, **kwargs))


@register_model
def agent_swin_t(pretrained: bool = False, **kwargs) -> SwinTransformer:
    """Agent-Swin-T (agent attention in stages 1-3)."""
    args = dict(**_TINY, attn_types=_AGENT_T, agent_num=_AGENT_NUM, window_size=7, drop_path_rate=0.2)
    return _create_swin('agent_swin_t', pretrained, **dict(args, **kwargs))


@register_model
def agent_swin_s(pretrained: bool = False, **kwargs) -> SwinTransformer:
    """Agent-Swin-S (agent attention in stages 1-2)."""
    args = dict(**_SMALL, attn_types=_AGENT_S, agent_num=_AGENT_NUM, window_size=7, drop_path_rate=0.3)
    return _create_swin('agent_swin_s', pretrained, **dict(args, **kwargs))


@register_model
def agent_swin_b(pretrained: bool = False, **kwargs) -> SwinTransformer:
    """Agent-Swin-B (agent attention in stages 1-2 and the first two blocks of stage 3)."""
    args = dict(**_BASE, attn_types=_AGENT_B, agent_num=_AGENT_NUM, window_size=7, drop_path_rate=0.5)
    return _create_swin('agent_swin_b', pretrained, **dict(args, **kwargs))


@register_model
def agent_swin_s_288(pretrained: bool = False, **kwargs) -> SwinTransformer:
    """Agent-Swin-S at 288 (softmax window 9)."""
    args = dict(**_SMALL, img_size=288, attn_types=_AGENT_S, agent_num=_AGENT_NUM, window_size=9,
                drop_path_rate=0.3)
    return _create_swin('agent_swin_s_288', pretrained, **dict(args, **kwargs))


@register_model
def agent_swin_b_384(pretrained: bool = False, **kwargs) -> SwinTransformer:
    """Agent-Swin-B fine-tuned at 384 (softmax window 12)."""
    args = dict(**_BASE, img_size=384, attn_types=_AGENT_B, agent_num=_AGENT_NUM, window_size=12,
                drop_path_rate=0.5)
    return _create_swin('agent_swin_b_384', pretrained, **dict(args, **kwargs))
