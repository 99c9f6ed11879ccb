"""AdamW parameter groups of the Swin / DeiT recipe: no weight decay on norms, biases and ``no_weight_decay`` names."""
from __future__ import annotations

from typing import Iterable

import torch.nn as nn
from mmengine.optim import OptimWrapper

from ..registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS, OPTIMIZERS


def no_weight_decay_names(model: nn.Module) -> tuple[set[str], set[str]]:
    """Full parameter names from every submodule's ``no_weight_decay()`` and keywords from
    ``no_weight_decay_keywords()`` (official Swin's relative_position_bias_table), wherever the module sits."""
    names: set[str] = set()
    keywords: set[str] = set()
    for prefix, module in model.named_modules():
        dot = f'{prefix}.' if prefix else ''
        if callable(getattr(module, 'no_weight_decay', None)):
            names |= {dot + n for n in module.no_weight_decay()}
        if callable(getattr(module, 'no_weight_decay_keywords', None)):
            keywords |= set(module.no_weight_decay_keywords())
    return names, keywords


def param_groups_no_decay(model: nn.Module, weight_decay: float, extra_names: Iterable[str] = (),
                          extra_keywords: Iterable[str] = ()) -> list[dict]:
    """Two groups: decayed weights, and (weight_decay=0) 1-D parameters (norms, biases, scales), ``.bias``
    parameters, the model's ``no_weight_decay`` names and anything containing one of its keywords."""
    names, keywords = no_weight_decay_names(model)
    names |= set(extra_names)
    keywords |= set(extra_keywords)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue  # frozen
        if (param.ndim <= 1 or name.endswith('.bias') or name in names
                or any(word in name for word in keywords)):
            no_decay.append(param)
        else:
            decay.append(param)
    return [dict(params=decay, weight_decay=weight_decay), dict(params=no_decay, weight_decay=0.0)]


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class NoDecayOptimWrapperConstructor:
    """Builds ``optim_wrapper`` with :func:`param_groups_no_decay` groups.

    ``paramwise_cfg`` may add ``no_decay_names`` (full parameter names) and ``no_decay_keywords``.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict | None = None):
        self.optim_wrapper_cfg = dict(optim_wrapper_cfg)
        self.optimizer_cfg = dict(self.optim_wrapper_cfg.pop('optimizer'))
        paramwise_cfg = dict(paramwise_cfg or {})
        self.extra_names = tuple(paramwise_cfg.pop('no_decay_names', ()))
        self.extra_keywords = tuple(paramwise_cfg.pop('no_decay_keywords', ()))
        if paramwise_cfg:
            raise ValueError(f'NoDecayOptimWrapperConstructor: unknown paramwise_cfg keys {sorted(paramwise_cfg)} '
                             f'(supported: no_decay_names, no_decay_keywords)')

    def __call__(self, model: nn.Module) -> OptimWrapper:
        if hasattr(model, 'module'):  # DDP wrapper: names as the bare model has them
            model = model.module
        optimizer_cfg = dict(self.optimizer_cfg)
        weight_decay = optimizer_cfg.get('weight_decay', 0.0)
        optimizer_cfg['params'] = param_groups_no_decay(model, weight_decay, self.extra_names, self.extra_keywords)
        optimizer = OPTIMIZERS.build(optimizer_cfg)
        wrapper_cfg = dict(self.optim_wrapper_cfg)
        wrapper_cfg.setdefault('type', 'OptimWrapper')
        return OPTIM_WRAPPERS.build(wrapper_cfg, default_args=dict(optimizer=optimizer))
