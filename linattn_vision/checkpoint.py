"""Safe loading of checkpoints: official FLatten / Agent releases, timm files, mmengine runs, safetensors.

Nothing here runs code from a checkpoint: pickles load with ``weights_only=True``; the yacs ``CfgNode`` that the
official releases pickle under 'config' is read as a plain ordered dict.
"""
from __future__ import annotations

import collections
import os
from typing import Any, Iterable, Mapping

import torch

# Official release files pickle their yacs config; map it onto OrderedDict (a dict subclass with the same
# reduce protocol) so the restricted unpickler reads it as data. A plain dict stand-in does not unpickle.
_OFFICIAL_SAFE_GLOBALS = [(collections.OrderedDict, 'yacs.config.CfgNode')]

# Keys under which checkpoints of various origins keep their weights, most specific first.
_STATE_DICT_KEYS = ('state_dict', 'model', 'module', 'model_ema', 'state_dict_ema')


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


def load_file(path: str | os.PathLike, map_location: str | torch.device = 'cpu') -> Any:
    """Read a checkpoint file (.pth/.pt/.bin pickles or .safetensors) without running code from it."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'checkpoint file not found: {path}')
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file as load_safetensors
        return load_safetensors(path, device=str(map_location))
    try:
        with torch.serialization.safe_globals(_OFFICIAL_SAFE_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # pickle errors come in many types; name the file and the cause in one line
        raise CheckpointError(f'cannot read checkpoint {path} safely: {type(e).__name__}: '
                              f'{str(e).splitlines()[0] if str(e) else ""}') from e


def extract_state_dict(checkpoint: Any, prefer_ema: bool = False) -> dict[str, torch.Tensor]:
    """Return the weights from any of the usual layouts ({'model': ...}, {'state_dict': ...}, a bare state dict)."""
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f'checkpoint is a {type(checkpoint).__name__}, not a dict of weights')
    keys = _STATE_DICT_KEYS
    if prefer_ema:
        keys = ('state_dict_ema', 'model_ema') + keys
    for key in keys:
        if key in checkpoint and isinstance(checkpoint[key], Mapping):
            state_dict = checkpoint[key]
            break
    else:
        state_dict = checkpoint
    tensors = {k: v for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f'no tensors found in checkpoint (top-level keys: {list(checkpoint)[:8]})')
    # DDP / mmengine wrappers prefix every key
    for prefix in ('module.', 'backbone.'):
        if all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix):]: v for k, v in tensors.items()}
    return tensors


def load_state_dict_file(path: str | os.PathLike, prefer_ema: bool = False) -> dict[str, torch.Tensor]:
    return extract_state_dict(load_file(path), prefer_ema=prefer_ema)


def _first(names: Iterable[str], n: int = 5) -> str:
    names = list(names)
    more = f' (+{len(names) - n} more)' if len(names) > n else ''
    return ', '.join(names[:n]) + more


def check_state_dict_fits(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = 'checkpoint',
                          allow_missing: Iterable[str] = ()) -> None:
    """Raise a CheckpointError naming the first offending keys when ``state_dict`` does not fit ``model``."""
    own = model.state_dict()
    allow_missing = set(allow_missing)
    missing = [k for k in own if k not in state_dict and k not in allow_missing]
    unexpected = [k for k in state_dict if k not in own]
    wrong_shape = [f'{k} {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}'
                   for k in state_dict if k in own and state_dict[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f'missing keys: {_first(missing)}')
    if unexpected:
        problems.append(f'unexpected keys: {_first(unexpected)}')
    if wrong_shape:
        problems.append(f'shape mismatch: {_first(wrong_shape, 3)}')
    if problems:
        raise CheckpointError(f'{source} does not fit {type(model).__name__}: ' + '; '.join(problems))


def save_safetensors(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    from safetensors.torch import save_file
    save_file({k: v.detach().contiguous().cpu() for k, v in state_dict.items()}, os.fspath(path))
