"""An mmengine model around any timm classifier: mixup / cutmix + soft-target loss for training, scores for eval."""
from __future__ import annotations

import sys
from typing import Any, Mapping

import timm
import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.model import BaseModel
from timm.data import Mixup

import linattn_vision  # noqa: F401  (registers the FLatten / Agent models with timm)
from ...checkpoint import CheckpointError, check_state_dict_fits, extract_state_dict
from ..checkpoint import load_trusted_checkpoint
from ..errors import UnknownBackboneError
from ..registry import MODELS


def soft_target_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a distribution over classes (mixup / cutmix targets), averaged over the batch."""
    return torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


@MODELS.register_module()
class TimmClassifier(BaseModel):
    """``timm.create_model(model_name, num_classes=..., **model_kwargs)`` on the mmengine Runner.

    Args:
        model_name: any timm model name (the FLatten / Agent variants are registered on import).
        num_classes: classifier classes.
        mixup: keyword arguments of ``timm.data.Mixup`` (``mixup_alpha``, ``cutmix_alpha``, ``prob``, ``switch_prob``,
            ``mode``); training batches are then mixed and the loss is the soft-target cross-entropy.
        label_smoothing: smoothing of the (mixed or hard) targets.
        pretrained: a checkpoint to start from (official FLatten / Agent release, timm or safetensors file, or an
            mmengine checkpoint of this model); loaded in ``init_weights`` through the model's
            ``checkpoint_filter_fn`` (which resizes position tables for fine-tuning at another resolution), with the
            classifier head dropped when its class count differs.
        model_kwargs: passed to ``timm.create_model`` (``drop_path_rate``, ``img_size``, ...).

    Batches are ``dict(inputs=<B,3,H,W>, labels=<B>)``; ``predict`` returns one dict a sample with ``pred_score``
    (softmax), ``pred_label`` and ``gt_label``.
    """

    def __init__(self, model_name: str, num_classes: int = 1000, mixup: Mapping | None = None,
                 label_smoothing: float = 0.0, pretrained: str | None = None,
                 data_preprocessor: Mapping | None = None, init_cfg: Mapping | None = None, **model_kwargs: Any):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if not timm.is_model(model_name):
            raise UnknownBackboneError(f'unknown timm model {model_name!r} (see timm.list_models(), e.g. '
                                       f'{timm.list_models("flatten_*")[:3] + timm.list_models("agent_*")[:3]})')
        self.model_name = model_name
        self.num_classes = num_classes
        self.model = timm.create_model(model_name, num_classes=num_classes, **model_kwargs)
        self.label_smoothing = label_smoothing
        self.mixup = None
        if mixup:
            self.mixup = Mixup(num_classes=num_classes, label_smoothing=label_smoothing, **mixup)
        self.pretrained = pretrained

    def init_weights(self) -> None:
        # timm initialised the weights at construction; some timm models have an ``init_weights`` of their own that
        # mmengine's default would call again, re-drawing them. Only a pretrained checkpoint changes them here.
        if self.pretrained:
            load_classifier_checkpoint(self, self.pretrained, strict=False)
        self._is_init = True

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor | None = None, mode: str = 'tensor'):
        if mode == 'tensor':
            return self.model(inputs)
        if mode == 'loss':
            return self.loss(inputs, labels)
        if mode == 'predict':
            return self.predict(inputs, labels)
        raise ValueError(f'unknown mode {mode!r}; expected "tensor", "loss" or "predict"')

    def loss(self, inputs: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        if labels is None:
            raise ValueError('training batches need labels')
        if self.mixup is not None:
            inputs, targets = self.mixup(inputs, labels)
            return dict(loss=soft_target_cross_entropy(self.model(inputs), targets))
        logits = self.model(inputs)
        return dict(loss=F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing))

    @torch.no_grad()
    def predict(self, inputs: torch.Tensor, labels: torch.Tensor | None = None) -> list[dict]:
        scores = self.model(inputs).float().softmax(dim=-1).cpu()
        pred = scores.argmax(dim=-1)
        gts = [None] * len(scores) if labels is None else labels.cpu().tolist()
        return [dict(pred_score=s, pred_label=int(p), gt_label=g) for s, p, g in zip(scores, pred, gts)]


def _classifier_state_dict(checkpoint: Any) -> dict[str, torch.Tensor]:
    """The timm model's weights from an mmengine checkpoint of TimmClassifier or any other layout."""
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get('state_dict'), Mapping):
        state_dict = checkpoint['state_dict']
        if state_dict and all(k.startswith('model.') for k in state_dict):
            return {k[len('model.'):]: v for k, v in state_dict.items()}
    return extract_state_dict(checkpoint)  # official {'model': ...}, timm, bare state dicts


def load_classifier_checkpoint(classifier: TimmClassifier, path: str, strict: bool = True) -> None:
    """Load an official FLatten / Agent, timm or mmengine checkpoint into ``classifier.model``.

    Weights that do not fit as saved go through the timm model's ``checkpoint_filter_fn`` (official key names, position
    tables at another resolution). ``strict``: every key must match (evaluation); otherwise (fine-tuning) only a
    classifier head of another class count may be left out.
    """
    net = classifier.model
    state_dict = _classifier_state_dict(load_trusted_checkpoint(path))
    own = net.state_dict()
    fits = state_dict.keys() == own.keys() and all(v.shape == own[k].shape for k, v in state_dict.items())
    if not fits:
        filter_fn = getattr(sys.modules[type(net).__module__], 'checkpoint_filter_fn', None)
        if filter_fn is not None:
            state_dict = filter_fn(state_dict, net)
    allow_missing = ()
    if not strict:
        head = [k for k in own if k.startswith(('head.', 'head_dist.', 'fc.', 'classifier.'))]
        if any(k in state_dict and state_dict[k].shape != own[k].shape for k in head):
            state_dict = {k: v for k, v in state_dict.items() if k not in head}
            allow_missing = head
    check_state_dict_fits(net, state_dict, source=f'checkpoint {path}', allow_missing=allow_missing)
    net.load_state_dict(state_dict, strict=not allow_missing)
    print_log(f'loaded {len(state_dict)} tensors into {classifier.model_name} from {path}'
              + (f' (head left at init: {", ".join(allow_missing)})' if allow_missing else ''), logger='current')


__all__ = ['TimmClassifier', 'load_classifier_checkpoint', 'soft_target_cross_entropy', 'CheckpointError']
