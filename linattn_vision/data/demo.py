"""The bundled demo data: generate once per parameter set, then reuse.

Each task folder (``<root>/coco``, ``<root>/ade``, ``<root>/imagenet``) is written into a temporary sibling and moved
into place only when complete, with a ``demo_manifest.json`` recording the parameters and a hash of the generator code
and image libraries. A folder whose manifest matches is reused as is; one from other parameters or an older generator
is regenerated; a folder without a manifest (not ours, or real data) is never touched unless ``force=True``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np

from . import formats

DEMO_TASKS = ('coco', 'ade', 'imagenet')
DEFAULT_NUM_TRAIN = 400
DEFAULT_NUM_VAL = 80
DEFAULT_SIZE = 128
MANIFEST_NAME = 'demo_manifest.json'

_WRITERS = {'coco': formats.write_coco, 'ade': formats.write_ade, 'imagenet': formats.write_imagefolder}
_GENERATOR_FILES = ('shapes.py', 'masks.py', 'render.py', 'formats.py')


def demo_data_paths(root: str | os.PathLike = 'data/demo') -> dict[str, Path]:
    """Data roots as the loaders want them: COCO root, ADEChallengeData2016 folder, ImageFolder root."""
    root = Path(root)
    return {'coco': root / 'coco', 'ade': root / 'ade' / 'ADEChallengeData2016', 'imagenet': root / 'imagenet'}


def generator_hash() -> str:
    """Changes whenever the generator code or the libraries that encode its files change."""
    digest = hashlib.sha256()
    here = Path(__file__).parent
    for name in _GENERATOR_FILES:
        digest.update((here / name).read_bytes())
    digest.update(f'opencv {cv2.__version__} numpy {np.__version__}'.encode())
    return digest.hexdigest()[:16]


def _progress_factory(enabled: bool) -> Callable[[Iterable, int, str], Iterable]:
    def no_bar(iterable, total, desc):
        return iterable

    def counter(iterable, total, desc):  # fallback without tqdm: ~10 lines per split
        step = max(1, total // 10)
        for done, item in enumerate(iterable, 1):
            yield item
            if done % step == 0 or done == total:
                print(f'{desc}: {done}/{total}', flush=True)

    if not enabled:
        return no_bar
    try:
        from tqdm import tqdm
    except ImportError:
        return counter
    return lambda iterable, total, desc: tqdm(iterable, total=total, desc=desc, unit='img', file=sys.stdout)


def _read_manifest(task_dir: Path) -> dict | None:
    try:
        return json.loads((task_dir / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None


def make_demo_data(root: str | os.PathLike = 'data/demo', tasks: Sequence[str] = DEMO_TASKS,
                   num_train: int = DEFAULT_NUM_TRAIN, num_val: int = DEFAULT_NUM_VAL, size: int = DEFAULT_SIZE,
                   seed: int = 0, force: bool = False, progress: bool = True,
                   log: Callable[[str], None] | None = print) -> dict[str, Path]:
    """Write (or reuse) the demo datasets under ``root``; returns the data root of each requested task.

    ``num_train``/``num_val`` are images per split and task, ``size`` the square image side in pixels.
    """
    unknown = [task for task in tasks if task not in DEMO_TASKS]
    if unknown:
        raise ValueError(f'unknown demo data task(s) {unknown}; choose from {list(DEMO_TASKS)}')
    for name, value, low in (('num_train', num_train, 1), ('num_val', num_val, 1), ('size', size, 32)):
        if int(value) != value or value < low:
            raise ValueError(f'{name} must be an integer >= {low}, got {value!r}')
    if 'imagenet' in tasks and min(num_train, num_val) < len(formats.DEMO_WNIDS):
        raise ValueError(f'the imagenet task needs at least one image per class ({len(formats.DEMO_WNIDS)}) in '
                         f'each split, got num_train={num_train}, num_val={num_val}')
    log = log or (lambda message: None)
    root = Path(root)
    params = dict(num_train=int(num_train), num_val=int(num_val), size=int(size), seed=int(seed))
    code = generator_hash()
    paths = demo_data_paths(root)
    for task in dict.fromkeys(tasks):
        task_dir = root / task
        manifest = _read_manifest(task_dir)
        if manifest == dict(task=task, params=params, generator=code) and not force:
            log(f'{task}: reusing {paths[task]} (manifest matches)')
            continue
        if task_dir.exists():
            if manifest is None and not force:
                raise FileExistsError(f'{task_dir} exists but has no {MANIFEST_NAME}, so it was not written by '
                                      f'make_demo_data; refusing to replace it (use force=True / --force)')
            log(f'{task}: regenerating {task_dir} ({"forced" if force else "parameters or generator changed"})')
        start = time.perf_counter()
        partial = root / f'.{task}.partial'
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        data_root = partial / paths[task].relative_to(task_dir)
        _WRITERS[task](data_root, {'train': params['num_train'], 'val': params['num_val']}, params['size'],
                       params['seed'], _progress_factory(progress))
        (partial / MANIFEST_NAME).write_text(json.dumps(dict(task=task, params=params, generator=code), indent=1))
        if task_dir.exists():
            shutil.rmtree(task_dir)
        os.replace(partial, task_dir)
        log(f'{task}: wrote {paths[task]} in {time.perf_counter() - start:.1f} s')
    return {task: paths[task] for task in tasks}
