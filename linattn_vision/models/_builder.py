"""Helpers shared by every model family: pretrained cfgs, official-checkpoint loading, filters, size checks."""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable, Mapping

import torch
import torch.nn as nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg

from .. import checkpoint as ckpt

__all__ = [
    'make_cfg', 'official_checkpoint_loading', 'build_official_model', 'official_state_dict',
    'check_fits_ignoring_classifier', 'check_min_input_size', 'model_name',
]


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
    with official_checkpoint_loading():
        return build_model_with_cfg(model_cls, variant, pretrained, pretrained_filter_fn=filter_fn,
                                    feature_cfg=feature_cfg, **kwargs)


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
