"""Exceptions for bad user input in the OpenMMLab glue.

The drivers (tools/train.py, tools/test.py through linattn_vision.mm.launch) run the checks below before building a
runner, catch ``USER_ERRORS`` and print the message as one line instead of a traceback: every message names the
file, key or type at fault.
"""
from __future__ import annotations

import json
import os

from ..checkpoint import CheckpointError


class UserInputError(Exception):
    """Bad input from the user (config, data, checkpoint); the message alone says what to fix."""


class DataRootError(UserInputError, FileNotFoundError):
    """A dataset root, image folder or annotation file that does not exist."""


class AnnotationError(UserInputError, ValueError):
    """An annotation file that does not parse or lacks the keys its format needs."""


class UnknownBackboneError(UserInputError, KeyError):
    """A backbone type or timm model name that is not registered."""

    def __str__(self):  # KeyError would quote the message
        return str(self.args[0]) if self.args else ''


USER_ERRORS = (UserInputError, CheckpointError)


def check_coco_annotation(ann_file: str) -> None:
    """Fail with one line when a COCO json is missing, does not parse or lacks images/annotations/categories."""
    if not os.path.isfile(ann_file):
        raise DataRootError(f'annotation file not found: {ann_file}')
    try:
        with open(ann_file) as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AnnotationError(f'annotation file {ann_file} is not valid JSON: {e}') from e
    if not isinstance(data, dict):
        raise AnnotationError(f'annotation file {ann_file} holds a {type(data).__name__}, not a COCO dict')
    missing = [k for k in ('images', 'annotations', 'categories') if k not in data]
    if missing:
        raise AnnotationError(f'annotation file {ann_file} is not COCO format: missing key(s) {", ".join(missing)}')


def _join(root: str | None, path: str | None) -> str | None:
    if path is None:
        return None
    if root and not os.path.isabs(path):
        return os.path.join(root, path)
    return path


def check_dataset_cfg(dataset_cfg) -> None:
    """Check that a dataset config's data root, image folder and annotation file exist (and COCO json parses).

    Handles mmdet's CocoDataset (``ann_file`` + ``data_prefix.img``), mmseg's ADE20KDataset (``data_prefix.img_path`` /
    ``seg_map_path``) and wrappers with a ``dataset`` field (RepeatDataset, ConcatDataset's ``datasets``).
    """
    if dataset_cfg is None:
        return
    if 'dataset' in dataset_cfg:
        return check_dataset_cfg(dataset_cfg['dataset'])
    if 'datasets' in dataset_cfg:
        for sub in dataset_cfg['datasets']:
            check_dataset_cfg(sub)
        return
    root = dataset_cfg.get('data_root')
    if root and not os.path.isdir(root):
        raise DataRootError(f'data root not found: {root} (dataset {dataset_cfg.get("type")}; '
                            f'set it with --cfg-options, e.g. train_dataloader.dataset.data_root=...)')
    prefix = dataset_cfg.get('data_prefix') or {}
    for key in ('img', 'img_path', 'seg_map_path', 'seg'):
        folder = _join(root, prefix.get(key))
        if folder and not os.path.isdir(folder):
            raise DataRootError(f'{key} folder not found: {folder} (dataset {dataset_cfg.get("type")})')
    ann_file = _join(root, dataset_cfg.get('ann_file') or None)
    if ann_file:
        if ann_file.endswith('.json'):
            check_coco_annotation(ann_file)
        elif not os.path.isfile(ann_file):
            raise DataRootError(f'annotation file not found: {ann_file}')


def check_backbone_cfg(cfg) -> None:
    """Fail with one line when ``model.backbone.type`` names no registered backbone in the config's scope."""
    backbone = (cfg.get('model') or {}).get('backbone')
    if not backbone or not isinstance(backbone.get('type'), str):
        return
    from mmengine.registry import MODELS
    scope = cfg.get('default_scope')
    with MODELS.switch_scope_and_registry(scope) as registry:
        if registry.get(backbone['type']) is None:
            ours = ', '.join(sorted(n for n in MODELS.module_dict if n.startswith(('FLatten', 'Agent'))))
            ours = ours or 'none registered - is linattn_vision.mm.backbones in custom_imports?'
            raise UnknownBackboneError(
                f'unknown backbone type {backbone["type"]!r} (model.backbone.type, registry scope {scope!r}); '
                f'FLatten / Agent backbones: {ours}')
