"""ImageNet-style folders and the timm transforms of the FLatten / Agent (Swin / DeiT) recipe.

``ImageFolderDataset`` reads ``<data_root>/<split>/<class>/<image>`` (ImageNet's ``train/n01440764/*.JPEG`` layout)
and yields ``dict(inputs=<CHW float tensor>, labels=<int>)``; mmengine's ``default_collate`` stacks those into the
batch that :class:`~linattn_vision.mm.classification.model.TimmClassifier` takes.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

from mmengine.registry import DefaultScope
from PIL import Image
from timm.data import create_transform
from torch.utils.data import Dataset

from ..errors import DataRootError
from ..registry import DATASETS, TRANSFORMS

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp')


@TRANSFORMS.register_module()
class TimmTransform:
    """timm's ``create_transform``: PIL image in, normalized CHW float tensor out.

    Training (``is_training=True``): RandomResizedCrop, flip, RandAugment / color jitter, random erasing, as set by the
    keyword arguments. Evaluation: resize to ``input_size / crop_pct`` and center-crop; ``crop_mode='squash'`` resizes
    both sides to that size first, as the official FLatten / Agent evaluation does.
    """

    def __init__(self, input_size: int | Sequence[int] = 224, is_training: bool = False, **timm_kwargs: Any):
        if isinstance(input_size, Sequence):
            input_size = tuple(input_size)
        self.input_size = input_size
        self.is_training = is_training
        self.transform = create_transform(input_size, is_training=is_training, **timm_kwargs)

    def __call__(self, img: Image.Image):
        return self.transform(img)

    def __repr__(self) -> str:
        return f'{type(self).__name__}({self.transform})'


def _build_pipeline(pipeline: Any) -> Callable | None:
    if pipeline is None or callable(pipeline):
        return pipeline
    if isinstance(pipeline, dict):
        # the transforms live in this scope whatever scope is current (a det/seg run may have set 'mmdet')
        with DefaultScope.overwrite_default_scope(TRANSFORMS.scope):
            return TRANSFORMS.build(pipeline)
    steps = [_build_pipeline(p) for p in pipeline]

    def compose(x):
        for step in steps:
            x = step(x)
        return x
    return compose


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith('.')


@DATASETS.register_module()
class ImageFolderDataset(Dataset):
    """Images in ``<data_root>/<split>/<class>/``; labels index the sorted class folder names (or ``classes``).

    Args:
        data_root: dataset root, e.g. ``data/imagenet``.
        split: sub-folder of ``data_root`` with one folder a class (``train`` / ``val``).
        pipeline: a transform config (``dict(type='TimmTransform', ...)``), a list of them, or a callable.
        classes: class folder names in label order; default: the sorted sub-folders of this split. Pass the training
            classes when a validation split lacks some of them, so that labels agree.
    """

    def __init__(self, data_root: str, split: str = 'train', pipeline: Any = None,
                 classes: Sequence[str] | None = None):
        self.data_root = data_root
        self.split = split
        self.folder = os.path.join(data_root, split)
        self.pipeline = _build_pipeline(pipeline)
        self.classes, self.samples = self._scan(classes)

    def _scan(self, classes: Sequence[str] | None) -> tuple[tuple[str, ...], list[tuple[str, int]]]:
        folder = self.folder
        layout = f'expected {folder}/<class>/<image>.JPEG, as ImageNet\'s {self.split}/n01440764/*.JPEG'
        if not os.path.isdir(folder):
            raise DataRootError(f'image folder not found: {folder} ({layout}; set the root with --cfg-options '
                                f'train_dataloader.dataset.data_root=... val_dataloader.dataset.data_root=...)')
        found = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith('.'))
        if classes is None:
            classes = found
        elif missing := [c for c in classes if c not in found]:
            raise DataRootError(f'class folder(s) missing in {folder}: {", ".join(missing[:5])}'
                                f'{f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""}')
        if not classes:
            raise DataRootError(f'image folder is empty: {folder} has no class sub-folders ({layout})')
        samples = []
        for label, name in enumerate(classes):
            class_dir = os.path.join(folder, name)
            files = sorted(e.name for e in os.scandir(class_dir) if e.is_file() and _is_image(e.name))
            samples += [(os.path.join(class_dir, f), label) for f in files]
        if not samples:
            raise DataRootError(f'image folder is empty: no {"/".join(IMAGE_EXTENSIONS[:3])}... images in the '
                                f'{len(classes)} class folders of {folder}')
        return tuple(classes), samples

    @property
    def metainfo(self) -> dict:
        return dict(classes=self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        path, label = self.samples[index]
        try:
            with Image.open(path) as img:
                img = img.convert('RGB')
        except OSError as e:
            raise OSError(f'cannot read image {path}: {e}') from e
        if self.pipeline is not None:
            img = self.pipeline(img)
        return dict(inputs=img, labels=label)

    def __repr__(self) -> str:
        return f'{type(self).__name__}({self.folder}, {len(self.classes)} classes, {len(self)} images)'
