"""FLatten / Agent backbones for mmdet 3.x and mmsegmentation 1.x.

Each backbone wraps the timm model of this toolkit (built with ``timm.create_model``, never a second copy of the
architecture) and adds what dense-prediction heads expect from an OpenMMLab backbone: a tuple of NCHW feature maps at
``out_indices`` with optional per-output norms (``norm{i}``, as mmdet's Swin), ``frozen_stages``, ``norm_eval``,
``with_cp`` and ``init_cfg=dict(type='Pretrained', checkpoint=...)`` that loads official FLatten / Agent ImageNet
files, timm / safetensors files of this toolkit and mmengine detector / segmentor checkpoints.

The types are registered once on mmengine's root MODELS registry, which mmdet's and mmseg's registries fall back to,
so configs of either library find them after
``custom_imports = dict(imports=['linattn_vision.mm.backbones'], allow_failed_imports=False)``.
"""
from __future__ import annotations

import importlib
import re
from typing import Mapping, Sequence

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from torch.nn.modules.batchnorm import _BatchNorm

import linattn_vision  # noqa: F401  (registers the timm models)
from ..checkpoint import CheckpointError, extract_state_dict
from .checkpoint import load_trusted_checkpoint
from .errors import UnknownBackboneError

__all__ = [
    'LinAttnBackbone', 'FLattenSwin', 'FLattenPVT', 'FLattenPVTv2', 'FLattenCSWin', 'AgentSwin', 'AgentPVT',
    'AgentCSWin', 'load_backbone_checkpoint',
]

# keys that only the ImageNet classifier has; a backbone has no use for them
_CLASSIFIER_PREFIXES = ('head.', 'fc_norm.', 'norm.', 'head_dist.', 'pre_logits.')


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW map (the per-output norm of Swin-style backbones)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                            self.eps).permute(0, 3, 1, 2).contiguous()


def _build_out_norm(norm_cfg: Mapping | None, channels: int) -> nn.Module:
    if norm_cfg is None:
        return nn.Identity()
    norm_cfg = dict(norm_cfg)
    norm_type = norm_cfg.pop('type')
    norm_cfg.pop('requires_grad', None)
    if norm_type == 'LN':
        return ChannelLayerNorm(channels, **norm_cfg)
    from mmcv.cnn import build_norm_layer  # BN, SyncBN, GN, ... as mmcv knows them
    return build_norm_layer(dict(type=norm_type, **norm_cfg), channels)[1]


class LinAttnBackbone(BaseModule):
    """Any timm model of this toolkit (or of timm) with ``forward_intermediates`` as an OpenMMLab backbone.

    Args:
        model_name: timm model name, e.g. ``'flatten_swin_t'``.
        out_indices: stages whose outputs are returned (0-based).
        out_norm: norm applied to each output, as an mmcv norm config (``dict(type='LN')``, ``dict(type='BN')``) or
            None; its parameters are named ``norm{i}``.
        frozen_stages: freeze the stem (patch embedding, positional embeddings) when >= 0 and stages
            ``0 .. frozen_stages - 1`` (with their output norms); frozen parts stay in eval mode.
        norm_eval: keep BatchNorm layers in eval mode while training (frozen running statistics).
        with_cp: gradient checkpointing of the blocks (timm's ``set_grad_checkpointing``).
        drop_path_rate: stochastic depth of the timm model.
        img_size: pretraining image size the positional tables are defined for; inputs of any size still work.
        model_kwargs: further keyword arguments for ``timm.create_model`` (e.g. ``depths``, ``embed_dim``,
            ``window_size``), so configs can shrink or reshape the model.
        pretrained: a checkpoint path (mmseg's way of passing one); same as ``init_cfg=dict(type='Pretrained', ...)``.
        init_cfg: ``dict(type='Pretrained', checkpoint=path, prefix=None, strict=True)``; ``prefix`` selects the keys
            of a bigger checkpoint (default: ``backbone.`` when the file is an mmengine detector / segmentor).
    """
    # default per-output norm of the family (Swin-style backbones add one; PVT stages end in their own or none)
    default_out_norm: dict | None = dict(type='LN')

    def __init__(self, model_name: str, out_indices: Sequence[int] = (0, 1, 2, 3),
                 out_norm: Mapping | None | str = 'default', frozen_stages: int = -1, norm_eval: bool = False,
                 with_cp: bool = False, drop_path_rate: float | None = None,
                 img_size: int | Sequence[int] | None = None, model_kwargs: Mapping | None = None,
                 pretrained: str | None = None, init_cfg: Mapping | None = None):
        if pretrained is not None:
            if init_cfg is not None:
                raise ValueError(f'{type(self).__name__}: give either pretrained or init_cfg, not both')
            if not isinstance(pretrained, str):
                raise TypeError(f'{type(self).__name__}: pretrained must be a checkpoint path, got {pretrained!r}')
            init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        super().__init__(init_cfg=init_cfg)
        if not timm.is_model(model_name):
            known = ', '.join(timm.list_models(model_name.split('_')[0] + '*')[:12])
            raise UnknownBackboneError(f'{type(self).__name__}: unknown timm model {model_name!r}'
                                       + (f' (known: {known})' if known else ''))
        self.model_name = model_name
        # the models take any input size themselves: position tables and agent biases follow the live grid
        kwargs = {}
        if img_size is not None:
            kwargs['img_size'] = img_size
        if drop_path_rate is not None:
            kwargs['drop_path_rate'] = drop_path_rate
        kwargs.update(model_kwargs or {})
        self.model = timm.create_model(model_name, pretrained=False, num_classes=0, **kwargs)
        if not hasattr(self.model, 'forward_intermediates'):
            raise TypeError(f'{model_name} has no forward_intermediates(); it cannot serve as a dense backbone')

        feature_info = self.model.feature_info
        num_stages = len(feature_info)
        self.out_indices = tuple(i if i >= 0 else num_stages + i for i in out_indices)
        if not self.out_indices or any(not 0 <= i < num_stages for i in self.out_indices):
            raise ValueError(f'out_indices {tuple(out_indices)} out of range for {model_name} ({num_stages} stages)')
        self.stage_modules = [info['module'] for info in feature_info]
        self.out_channels = [feature_info[i]['num_chs'] for i in self.out_indices]
        self.out_strides = [feature_info[i]['reduction'] for i in self.out_indices]

        # drop what a feature extractor never runs (later stages, final norm, classifier) so no parameter is unused
        # (DDP would complain) and keep the names, to skip their checkpoint keys quietly
        names_before = set(self.model.state_dict())
        if hasattr(self.model, 'prune_intermediate_layers'):
            self.model.prune_intermediate_layers(list(self.out_indices), prune_norm=True, prune_head=True)
        self._pruned_keys = names_before - set(self.model.state_dict())

        if out_norm == 'default':
            out_norm = self.default_out_norm
        for i in self.out_indices:
            self.add_module(f'norm{i}', _build_out_norm(out_norm, feature_info[i]['num_chs']))

        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        if with_cp:
            self.model.set_grad_checkpointing(True)
        self._freeze_stages()

    # ---- freezing -------------------------------------------------------------------------------------------------
    def _stage_of(self, name: str) -> int | None:
        """Stage index of a parameter / module name of the timm model; None for the stem.

        Inside a stage module (``feature_info`` names it) is that stage. Outside, a top-level name numbered like
        the stage modules belongs to that stage (PVT's ``patch_embed2`` / ``pos_embed2`` go with ``block2``,
        CSWin's ``merge1``, the downsampling after stage 1, with ``stage1`` as mmdet's Swin counts it), except
        the first stage's embeddings (``patch_embed1``, ``pos_embed1``), which are the stem.
        """
        for i, prefix in enumerate(self.stage_modules):
            if name == prefix or name.startswith(prefix + '.'):
                return i
        numbered = re.fullmatch(r'\D+?(\d+)', self.stage_modules[0])
        top = re.fullmatch(r'(\D+?)(\d+)', name.split('.')[0])
        if numbered and top:
            index = int(top.group(2)) - int(numbered.group(1))
            if index == 0 and 'embed' in top.group(1):
                return None
            if 0 <= index < len(self.stage_modules):
                return index
        return None

    def _is_frozen(self, name: str) -> bool:
        stage = self._stage_of(name)
        return self.frozen_stages >= 0 and (stage is None or stage < self.frozen_stages)

    def _freeze_stages(self):
        if self.frozen_stages < 0:
            return
        for name, module in self.model.named_modules():
            if name and self._is_frozen(name) and not any(p.startswith(name + '.') for p in self.stage_modules):
                module.eval()  # dropout / drop-path off, BN statistics fixed
        for name, param in self.model.named_parameters():
            if self._is_frozen(name):
                param.requires_grad = False
        for i in self.out_indices:
            if i < self.frozen_stages:
                norm = getattr(self, f'norm{i}')
                norm.eval()
                for param in norm.parameters():
                    param.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    # ---- forward --------------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.model.forward_intermediates(x, indices=list(self.out_indices), intermediates_only=True)
        return tuple(getattr(self, f'norm{i}')(f) for i, f in zip(self.out_indices, features))

    # ---- weights --------------------------------------------------------------------------------------------------
    def init_weights(self):
        cfg = self.init_cfg
        if isinstance(cfg, (list, tuple)):
            pretrained = [c for c in cfg if c.get('type') == 'Pretrained']
            cfg = pretrained[-1] if pretrained else None
        if cfg is None or cfg.get('type') != 'Pretrained':
            # timm initialised the model at construction; the output norms keep their default init
            super().init_weights()
            return
        load_backbone_checkpoint(self, cfg['checkpoint'], prefix=cfg.get('prefix'), strict=cfg.get('strict', True),
                                 map_location=cfg.get('map_location', 'cpu'))
        self._is_init = True


def _model_filter_fn(model: nn.Module):
    module = importlib.import_module(type(model).__module__)
    return getattr(module, 'checkpoint_filter_fn', None)


def load_backbone_checkpoint(backbone: LinAttnBackbone, path: str, prefix: str | None = None, strict: bool = True,
                             map_location='cpu') -> dict[str, list[str]]:
    """Load ImageNet / timm / mmengine weights into ``backbone``; raise CheckpointError naming keys that don't fit.

    Returns the key report: ``loaded``, ``missing`` (left as initialised), ``skipped`` (classifier-only keys).
    """
    checkpoint = load_trusted_checkpoint(path, map_location=map_location)
    raw = checkpoint.get('state_dict', checkpoint.get('model', checkpoint)) if isinstance(checkpoint, Mapping) else None
    if prefix is None and isinstance(raw, Mapping) and any(k.startswith('backbone.') for k in raw) \
            and not all(k.startswith('backbone.') for k in raw):
        prefix = 'backbone.'  # a whole detector / segmentor of this toolkit
    if prefix:
        if not isinstance(raw, Mapping):
            raise CheckpointError(f'checkpoint {path} holds no state dict')
        state_dict = {k[len(prefix):]: v for k, v in raw.items() if k.startswith(prefix) and torch.is_tensor(v)}
        if not state_dict:
            raise CheckpointError(f'checkpoint {path} has no keys starting with {prefix!r} '
                                  f'(first keys: {", ".join(list(raw)[:5])})')
    else:
        state_dict = extract_state_dict(checkpoint)

    own = backbone.state_dict()
    if any(k.startswith('model.') for k in state_dict) and all(k.startswith(('model.', 'norm')) for k in state_dict):
        # a checkpoint of this very wrapper (e.g. a backbone saved from a detector): load as is
        target = backbone
        model_sd = state_dict
        skipped = [k for k in model_sd if k not in own and k[len('model.'):] in backbone._pruned_keys]
    else:
        # an ImageNet classifier: official layout goes through the model file's filter into timm layout
        target = backbone.model
        # parts the backbone pruned (later stages, final norm) and the classifier are not the filter's business
        model_own = target.state_dict()
        model_sd = {k: v for k, v in state_dict.items() if k not in backbone._pruned_keys
                    and not (k.startswith(_CLASSIFIER_PREFIXES) and k not in model_own)}
        skipped = [k for k in state_dict if k not in model_sd]
        filter_fn = _model_filter_fn(target)
        fits = all(k in model_sd and model_sd[k].shape == v.shape for k, v in model_own.items())
        if not fits and filter_fn is not None:
            try:
                model_sd = filter_fn(dict(model_sd), target)
            except CheckpointError as e:  # the filter names the keys; add the file
                raise CheckpointError(f'{path}: {e}') from None
    target_own = target.state_dict()

    unexpected = [k for k in model_sd if k not in target_own and k not in skipped]
    missing = [k for k in target_own if k not in model_sd]
    wrong_shape = [f'{k} {tuple(model_sd[k].shape)} vs model {tuple(v.shape)}'
                   for k, v in target_own.items() if k in model_sd and model_sd[k].shape != v.shape]
    problems = []
    if wrong_shape:
        problems.append('shape mismatch: ' + ', '.join(wrong_shape[:3]) + _more(wrong_shape, 3))
    if strict and unexpected:
        problems.append('unexpected keys: ' + ', '.join(unexpected[:5]) + _more(unexpected, 5))
    if strict and missing:
        problems.append('missing keys: ' + ', '.join(missing[:5]) + _more(missing, 5))
    if problems:
        raise CheckpointError(f'checkpoint {path} does not fit {type(backbone).__name__}({backbone.model_name}): '
                              + '; '.join(problems))
    load_sd = {k: v for k, v in model_sd.items() if k in target_own}
    target.load_state_dict(load_sd, strict=False)
    fresh = [k for k in own if not k.startswith('model.')] if target is backbone.model else []
    print_log(f'{type(backbone).__name__}({backbone.model_name}): loaded {len(load_sd)} tensors from {path}; '
              f'missing {len(missing)}{": " + ", ".join(missing[:5]) if missing else ""}; '
              f'unexpected {len(unexpected)}{": " + ", ".join(unexpected[:5]) if unexpected else ""}; '
              f'skipped {len(skipped)} classifier/pruned keys; output norms initialised fresh: {len(fresh)} tensors',
              logger='current')
    return dict(loaded=sorted(load_sd), missing=missing, unexpected=unexpected, skipped=skipped)


def _more(items, n):
    return f' (+{len(items) - n} more)' if len(items) > n else ''


# ---- registered families ------------------------------------------------------------------------------------------
class _FamilyBackbone(LinAttnBackbone):
    """A backbone family: ``arch`` picks the timm variant ``{prefix}_{arch}``."""
    model_prefix: str = ''

    def __init__(self, arch: str = 't', **kwargs):
        name = f'{self.model_prefix}_{arch}'
        if not timm.is_model(name):
            known = sorted(n[len(self.model_prefix) + 1:] for n in timm.list_models(self.model_prefix + '_*')
                           if not n.startswith(self.model_prefix + '_v2_'))  # PVT v2 is a family of its own
            raise UnknownBackboneError(f'{type(self).__name__}: unknown arch {arch!r} (timm model {name} is not '
                                       f'registered; known archs: {", ".join(known) or "none"})')
        self.arch = arch
        super().__init__(model_name=name, **kwargs)


class _SwinLike(_FamilyBackbone):
    default_out_norm = dict(type='LN')


class _PVTLike(_FamilyBackbone):
    default_out_norm = None  # as the official Agent-PVT downstream backbone: stage outputs go to the neck as is


def _register(cls):
    """Register on the root registry once (re-imports under another module path must not fail)."""
    if MODELS.get(cls.__name__) is None:
        MODELS.register_module(module=cls)
    return cls


@_register
class FLattenSwin(_SwinLike):
    model_prefix = 'flatten_swin'


@_register
class AgentSwin(_SwinLike):
    model_prefix = 'agent_swin'


@_register
class FLattenCSWin(_SwinLike):
    model_prefix = 'flatten_cswin'


@_register
class AgentCSWin(_SwinLike):
    model_prefix = 'agent_cswin'


@_register
class FLattenPVT(_PVTLike):
    model_prefix = 'flatten_pvt'


@_register
class AgentPVT(_PVTLike):
    model_prefix = 'agent_pvt'


@_register
class FLattenPVTv2(_PVTLike):
    model_prefix = 'flatten_pvt_v2'


_register(LinAttnBackbone)
