"""Trusted loading of this project's own mmengine checkpoints under ``torch.load(weights_only=True)``.

mmengine 0.10.7 calls ``torch.load`` without ``weights_only``; since torch 2.6 that means ``weights_only=True`` and its
own checkpoints stop loading (``Unsupported global: GLOBAL mmengine.logging.history_buffer.HistoryBuffer``): the
runner's message hub pickles HistoryBuffer objects holding numpy arrays (and, through ``getattr``, their table of
statistics methods), schedulers pickle ``collections.Counter`` milestones, metrics may leave numpy scalars in
``best_score``. :func:`trusted_checkpoint_loading` allows exactly those
classes (plus the yacs ``CfgNode`` of official FLatten / Agent files, read as an OrderedDict) for the duration of a
``with`` block; the restricted unpickler stays on, nothing else is allowed and nothing global is changed.
"""
from __future__ import annotations

import collections
import contextlib
import os
import pickle
from typing import Any, Iterator

import numpy as np
import torch

from ..checkpoint import _OFFICIAL_SAFE_GLOBALS, CheckpointError

# numpy dtypes that HistoryBuffer arrays and metric scalars use
_NUMPY_SCALAR_TYPES = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
                       np.float16, np.float32, np.float64)


def _numpy_globals() -> list:
    """The numpy callables a pickled ndarray / numpy scalar refers to, under numpy 2 and numpy 1 names."""
    multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
    entries: list = [np.ndarray, np.dtype]
    for func in (multiarray._reconstruct, multiarray.scalar):
        entries.append(func)
        for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):  # pickles written by numpy 1 or 2
            entries.append((func, f'{module}.{func.__name__}'))
    entries += [type(np.dtype(t)) for t in _NUMPY_SCALAR_TYPES]  # numpy.dtypes.Float64DType, ...
    return entries


def _history_buffer_getattr(owner: Any, name: str) -> Any:
    """Stands in for ``getattr`` while unpickling: a HistoryBuffer pickles its table of statistics methods as
    ``getattr(HistoryBuffer, 'mean')``, ...; that lookup, and no other, is allowed."""
    from mmengine.logging.history_buffer import HistoryBuffer
    # the built-in statistics enter _statistics_methods only when a first HistoryBuffer is made, so a fresh
    # process (a resume) has an empty table: allow them by name too
    if owner is HistoryBuffer and (name in ('min', 'max', 'mean', 'current')
                                   or name in HistoryBuffer._statistics_methods):
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(f'checkpoint asks for getattr({owner!r}, {name!r}); only the statistics methods '
                                 f'of mmengine HistoryBuffer are allowed')


def trusted_checkpoint_globals() -> list:
    """Every non-tensor class that mmengine checkpoints of this project (and official releases) pickle."""
    from mmengine.logging.history_buffer import HistoryBuffer
    return [HistoryBuffer, (_history_buffer_getattr, 'builtins.getattr'), collections.Counter,
            bytes,  # the data of an empty numpy array
            *_numpy_globals(), *_OFFICIAL_SAFE_GLOBALS]


@contextlib.contextmanager
def trusted_checkpoint_loading() -> Iterator[None]:
    """Let ``torch.load(weights_only=True)`` (mmengine's resume / load_from included) read mmengine checkpoints."""
    with torch.serialization.safe_globals(trusted_checkpoint_globals()):
        yield


def load_trusted_checkpoint(path: str | os.PathLike, map_location: str | torch.device = 'cpu') -> Any:
    """Read an mmengine / official / timm checkpoint with the restricted unpickler and the allowlist above."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f'checkpoint file not found: {path}')
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file as load_safetensors
        return load_safetensors(path, device=str(map_location))
    try:
        with trusted_checkpoint_loading():
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # pickle errors come in many types; one line naming the file and the cause
        first_line = str(e).splitlines()[0] if str(e) else ''
        raise CheckpointError(f'cannot read checkpoint {path} safely: {type(e).__name__}: {first_line}') from e
