"""Helpers shared by every model family: the common timm model API, pretrained cfgs, official-checkpoint loading,
filters, size checks."""
from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import get_device_dtype, trunc_normal_
from timm.models import build_model_with_cfg
from timm.models._features import feature_take_indices

from .. import checkpoint as ckpt

__all__ = [
    'TimmApiMixin', 'stage_intermediates', 'drop_stages_after', 'make_cfg', 'flatten_release', 'agent_release',
    'FLATTEN_ORIGIN', 'AGENT_ORIGIN', 'official_checkpoint_loading',
    'build_official_model', 'official_state_dict',
    'check_fits_ignoring_classifier', 'check_min_input_size', 'model_name',
]


class TimmApiMixin:
    """The parts of timm's model API that every family here shares.

    A model lists it before ``nn.Module`` and provides ``num_features``, ``global_pool``, ``head_drop``, ``head``
    and ``forward_features``. Class attributes say what differs:

    * ``global_pools``: the accepted ``global_pool`` values.
    * ``pool_dims``: the spatial dims of ``forward_features``' output that ``'avg'`` pooling averages.
    """
    global_pools: Tuple[str, ...] = ('avg', '')
    pool_dims: Tuple[int, ...] = (-2, -1)

    def _check_global_pool(self, global_pool: str):
        if global_pool not in self.global_pools:
            names = [repr(p) for p in self.global_pools]
            raise ValueError(f"global_pool must be {', '.join(names[:-1])} or {names[-1]}, got {global_pool!r}")

    @staticmethod
    def _init_weights(m: nn.Module):
        # the official releases' init: truncated normal linears, unit layer norms, zero biases
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True):
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None):
        self.num_classes = num_classes
        if global_pool is not None:
            self._check_global_pool(global_pool)
            self.global_pool = global_pool
        dd = get_device_dtype(self)
        self.head = nn.Linear(self.num_features, num_classes, **dd) if num_classes > 0 else nn.Identity()
        self.head.train(self.training)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == 'avg':
            x = x.mean(dim=self.pool_dims)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def stage_intermediates(
        forward_stage: Callable[[int, torch.Tensor], torch.Tensor],
        x: torch.Tensor,
        num_stages: int,
        indices: Optional[Union[int, List[int]]],
        stop_early: bool,
        intermediates_only: bool,
) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
    """``forward_intermediates`` of a model whose stages each map a tensor to the next (``forward_stage(i, x)``)
    and whose stage outputs are the intermediates as they are."""
    take_indices, max_index = feature_take_indices(num_stages, indices)
    last = max_index if stop_early or intermediates_only else num_stages - 1
    intermediates = []
    for i in range(last + 1):
        x = forward_stage(i, x)
        if i in take_indices:
            intermediates.append(x)
    if intermediates_only:
        return intermediates
    return x, intermediates


def drop_stages_after(model: nn.Module, max_index: int, stage_attrs: Callable[[int], Sequence[str]]) -> bool:
    """Delete the modules of the stages after ``max_index`` (``stage_attrs(i)`` names those of stage ``i``) and
    shrink ``num_stages`` / ``num_features`` to match. Returns whether the last stage went."""
    for i in range(max_index + 1, model.num_stages):
        for name in stage_attrs(i):
            delattr(model, name)
    prune_end = max_index < model.num_stages - 1
    model.num_stages = max_index + 1
    if prune_end:
        model.num_features = model.head_hidden_size = model.feature_info[max_index]['num_chs']
    return prune_end


def make_cfg(url: str = '', **kwargs) -> dict[str, Any]:
    """timm pretrained cfg with the official releases' ImageNet evaluation settings."""
    return {
        'url': url,
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': None,
        'crop_pct': .875, 'interpolation': 'bicubic', 'fixed_input_size': False,
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'patch_embed.proj', 'classifier': 'head',
        'license': 'mit',
        **kwargs,
    }


# The official releases are on Google Drive / Tsinghua cloud, which timm cannot download: the pretrained cfgs say
# where they are (notes, origin_url) and pretrained=True takes the downloaded file.
LOAD_OFFICIAL_FILE = 'load the official release file with pretrained=True, pretrained_cfg_overlay=dict(file=<path>)'
FLATTEN_ORIGIN = dict(paper_ids='arXiv:2308.00442', origin_url='https://github.com/LeapLabTHU/FLatten-Transformer')
AGENT_ORIGIN = dict(paper_ids='arXiv:2312.08874', origin_url='https://github.com/LeapLabTHU/Agent-Attention')


def flatten_release(linked: bool = True) -> dict[str, Any]:
    """pretrained-cfg fields of a FLatten release (``linked``: its download link is in origin_url's README)."""
    notes = ('official weights: see origin_url',) if linked else ()
    return dict(FLATTEN_ORIGIN, notes=(*notes, LOAD_OFFICIAL_FILE))


def agent_release(link: str | None = None) -> dict[str, Any]:
    """pretrained-cfg fields of an Agent-Attention release; ``link``: its Tsinghua-cloud file id."""
    where = f'https://cloud.tsinghua.edu.cn/f/{link}/?dl=1' if link else 'see origin_url'
    return dict(AGENT_ORIGIN, notes=(f'official weights: {where}', LOAD_OFFICIAL_FILE))


@contextlib.contextmanager
def official_checkpoint_loading():
    """Let ``torch.load(weights_only=True)`` (timm's loader) read official release files.

    They pickle a yacs ``CfgNode`` under 'config'; inside this block it unpickles as a plain OrderedDict,
    with no code run and no yacs needed.
    """
    with torch.serialization.safe_globals(ckpt._OFFICIAL_SAFE_GLOBALS):
        yield


def build_official_model(model_cls: Callable[..., nn.Module], variant: str, pretrained: bool,
                         filter_fn: Callable, feature_cfg: dict, **kwargs) -> nn.Module:
    """``build_model_with_cfg`` that also reads official release files passed as
    ``pretrained_cfg_overlay=dict(file=...)``."""
    if pretrained:
        _require_weight_source(variant, kwargs.get('pretrained_cfg'), kwargs.get('pretrained_cfg_overlay'))
    with official_checkpoint_loading():
        return build_model_with_cfg(model_cls, variant, pretrained, pretrained_filter_fn=filter_fn,
                                    feature_cfg=feature_cfg, **kwargs)


def _require_weight_source(variant: str, pretrained_cfg, overlay) -> None:
    """``pretrained=True`` without a file: say where the weights come from (timm's own error says only that there
    are none, which reads as if the model had no ImageNet weights at all)."""
    from timm.models._builder import resolve_pretrained_cfg
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg=pretrained_cfg, pretrained_cfg_overlay=overlay)
    if cfg.file and not cfg.state_dict and not os.path.isfile(cfg.file):
        raise FileNotFoundError(f'{variant}: pretrained file not found: {cfg.file}')
    if any(getattr(cfg, key) for key in ('url', 'file', 'state_dict', 'hf_hub_id')):
        return
    where = '; '.join(note.replace('see origin_url', f'see {cfg.origin_url}') for note in cfg.notes or ()
                      if note != LOAD_OFFICIAL_FILE) or 'none listed'
    raise RuntimeError(f"{variant}: no weights timm can download ({where}); pass a file: timm.create_model("
                       f"'{variant}', pretrained=True, pretrained_cfg_overlay=dict(file='/path/to/weights.pth'))")


def official_state_dict(state_dict: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The weights of an official release dict ({'model': ...}) or of an already extracted state dict."""
    if any(isinstance(state_dict.get(k), Mapping) for k in ('model', 'state_dict', 'state_dict_ema', 'model_ema')):
        return ckpt.extract_state_dict(state_dict)
    return dict(state_dict)


def check_fits_ignoring_classifier(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                                   classifier: str | Iterable[str] = 'head', source: str = 'checkpoint') -> None:
    """Raise a CheckpointError naming the first offending keys; classifier keys are left to timm.

    timm's loader drops or adapts the classifier itself when ``num_classes`` differs from the checkpoint,
    so classifier keys may differ in shape or be absent (``num_classes=0``).
    """
    prefixes = ((classifier,) if isinstance(classifier, str) else tuple(classifier))
    prefixes = tuple(p + '.' for p in prefixes)
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(prefixes)}
    body = {k: v for k, v in state_dict.items() if not k.startswith(prefixes)}
    # check_state_dict_fits reads state_dict() and the class name only
    view = type(type(model).__name__, (), {'state_dict': lambda self: own})()
    ckpt.check_state_dict_fits(view, body, source=source)


def model_name(model: nn.Module) -> str:
    """The registered timm name of a model built by timm, else its class name."""
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    return cfg.get('architecture') or type(model).__name__


def check_min_input_size(model: nn.Module, hw: tuple[int, int], min_hw: tuple[int, int]) -> None:
    """A clear error for an input smaller than the smallest size the model takes."""
    if hw[0] < min_hw[0] or hw[1] < min_hw[1]:
        raise ValueError(f'{model_name(model)} takes inputs of at least {min_hw[0]}x{min_hw[1]} pixels; '
                         f'got {hw[0]}x{hw[1]}')


def pad_to_patches(x: torch.Tensor, patch: int) -> torch.Tensor:
    """An NCHW image zero-padded at the bottom and right to whole patches, or ``x`` itself where it already is (no
    size expression for torch.compile's symbolic sizes to carry: see deit.DeiT._embed)."""
    pad_h, pad_w = -x.shape[-2] % patch, -x.shape[-1] % patch
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    return x


def per_stage(value, num_stages: int, name: str) -> tuple:
    """One value for every stage: a sequence of ``num_stages`` entries (entries may be None), or a single value
    (None included) repeated."""
    if isinstance(value, (list, tuple)):
        if len(value) != num_stages:
            raise ValueError(f'{name} has {len(value)} entries, expected one for each of the {num_stages} stages')
        return tuple(value)
    return (value,) * num_stages
