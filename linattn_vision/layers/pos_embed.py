"""Resizing of learned position parameters to a live token grid, and a small cache for the results.

Every learned position parameter in these models is trained at one token grid (e.g. 56x56 for Swin stage 1 at
224). At another input size the models resize it to the grid they actually see; these helpers do that one way
everywhere, and the checkpoint filters use the same functions when the resolution changes at load time.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops._triton import autocast_off, constant_cache, needs_grad

__all__ = [
    'to_hw', 'resize_tokens_grid', 'resize_grid', 'resize_axis', 'relative_position_index',
    'resize_rel_pos_table', 'GridCache', 'memoize',
]


def to_hw(size) -> tuple[int, int]:
    """An int or a pair -> an (H, W) tuple of ints."""
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


# grids whose (output points x input points) stay within this resize in one product with the Kronecker matrix of the
# row and column weights (at most 1 MB in fp32, 16 cached; Agent-Swin-T's 7x7 biases on its 56x56 grid: 0.6 MB);
# larger ones (detection-size maps) in two products with the row and column matrices
KRON_MAX_ELEMENTS = 1 << 18


def _interpolation_matrix(size: int, out: int, mode: str, device, dtype) -> torch.Tensor:
    """(out, size) weights of `F.interpolate` along one axis (align_corners=False): F.interpolate of the identity's
    one-hot rows. Bilinear and bicubic resizing are separable, so products with these give F.interpolate's values."""
    eye = torch.eye(size, device=device, dtype=dtype).reshape(1, size, size, 1)
    return F.interpolate(eye, size=(out, 1), mode=mode, align_corners=False)[0, :, :, 0].t()


_axis_matrix = constant_cache(maxsize=128)(_interpolation_matrix)


def _row_col_matrices(old_hw, new_hw, mode: str, device, dtype):
    """(H, H0) and (W, W0): the per-axis weights of a resize from old_hw to new_hw."""
    return tuple(_axis_matrix(n0, n, mode, device, dtype) for n0, n in zip(old_hw, new_hw))


@constant_cache(maxsize=16)
def _grid_matrix(old_hw: tuple, new_hw: tuple, mode: str, device, dtype) -> torch.Tensor:
    """(H0*W0, H*W): the Kronecker product of the row and column matrices, transposed (a grid's flattened values
    times it give the resized grid: no transpose op per call)."""
    rows, cols = _row_col_matrices(old_hw, new_hw, mode, device, dtype)
    kron = rows[:, None, :, None] * cols[None, :, None, :]  # (H, W, H0, W0)
    return kron.reshape(rows.shape[0] * cols.shape[0], -1).t().contiguous()


def resize_grid(t: torch.Tensor, size: Sequence[int], mode: str = 'bilinear') -> torch.Tensor:
    """Resize the last two dims (H, W) of a tensor of any rank; leading dims are treated as channels.

    Returns ``t`` itself when the size already matches (interpolating to the same size is the identity). Outside
    torch.compile, bilinear and bicubic resizing are products with F.interpolate's weight matrices (one product with
    their Kronecker matrix on small grids), in ``t``'s dtype with autocast off: on CUDA F.interpolate runs an NCHW
    grid as one thread per output pixel looping over every channel (Agent-Swin-T's biases, resized in every training
    forward, 588 channels on stage 3's 14x14 grid: 2.64 ms per step for 20 calls on an H200). Inductor lowers
    F.interpolate to a pointwise kernel fused with what follows, so compiled graphs keep it.
    """
    size = to_hw(size)
    old = tuple(t.shape[-2:])
    if old == size:
        return t
    lead = t.shape[:-2]
    if mode == 'nearest' or torch.compiler.is_compiling():
        out = F.interpolate(t.reshape(1, -1, *old), size=size, mode=mode,
                            align_corners=None if mode == 'nearest' else False)
        return out.reshape(*lead, *size)
    with autocast_off(t.device.type):  # products in t's dtype, not rounded to half
        if old[0] * old[1] * size[0] * size[1] <= KRON_MAX_ELEMENTS:
            grid = _grid_matrix(old, size, mode, t.device, t.dtype)
            return torch.matmul(t.reshape(*lead, -1), grid).reshape(*lead, *size)
        rows, cols = _row_col_matrices(old, size, mode, t.device, t.dtype)
        return torch.matmul(rows, torch.matmul(t, cols.t()))


def resize_axis(t: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """Linearly resize one axis of a tensor (the 1-D counterpart of :func:`resize_grid`: F.interpolate's 'linear'
    values, outside torch.compile as one product with the axis's weight matrix)."""
    dim = dim % t.ndim
    if t.shape[dim] == size:
        return t
    moved = t.movedim(dim, -1)
    if torch.compiler.is_compiling():
        out = F.interpolate(moved.reshape(1, -1, moved.shape[-1]), size=size, mode='linear', align_corners=False)
        return out.reshape(*moved.shape[:-1], size).movedim(-1, dim)
    weights = _axis_matrix(t.shape[dim], size, 'bilinear', t.device, t.dtype)
    with autocast_off(t.device.type):  # products in t's dtype, not rounded to half
        return torch.matmul(moved, weights.t()).movedim(-1, dim)


def resize_tokens_grid(pos: torch.Tensor, old_hw: Sequence[int], new_hw: Sequence[int],
                       mode: str = 'bicubic') -> torch.Tensor:
    """Resize a flattened token-grid parameter (..., H0*W0, C) to (..., H*W, C) by interpolation on the grid."""
    old_hw, new_hw = to_hw(old_hw), to_hw(new_hw)
    if old_hw == new_hw:
        return pos
    n, c = pos.shape[-2:]
    if n != old_hw[0] * old_hw[1]:
        raise ValueError(f'token grid parameter has {n} tokens, which is not the {old_hw[0]}x{old_hw[1]} grid '
                         f'it is said to be trained on')
    lead = pos.shape[:-2]
    grid = pos.reshape(-1, *old_hw, c).permute(0, 3, 1, 2)  # L C H0 W0
    grid = resize_grid(grid, new_hw, mode=mode)
    return grid.permute(0, 2, 3, 1).reshape(*lead, new_hw[0] * new_hw[1], c)


def relative_position_index(window: Sequence[int], table_window: Sequence[int] | None = None) -> torch.Tensor:
    """Swin's pairwise relative-position index for a ``window``, into a table built for ``table_window``.

    The table holds (2*Th-1)*(2*Tw-1) rows, one per relative offset of a Th x Tw window. A smaller window
    (a feature map smaller than the trained window) indexes the same table: its offsets are a subset, so
    every pair keeps the bias learned for its offset.
    """
    wh, ww = to_hw(window)
    th, tw = to_hw(table_window if table_window is not None else window)
    if wh > th or ww > tw:
        raise ValueError(f'window {wh}x{ww} is larger than the relative-position table window {th}x{tw}')
    coords = torch.stack(torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing='ij')).flatten(1)  # 2 N
    rel = coords[:, :, None] - coords[:, None, :]  # 2 N N
    rel_h = rel[0] + th - 1
    rel_w = rel[1] + tw - 1
    return rel_h * (2 * tw - 1) + rel_w  # N N


def resize_rel_pos_table(table: torch.Tensor, old_window: Sequence[int], new_window: Sequence[int]) -> torch.Tensor:
    """Resize a Swin relative-position bias table ((2h-1)*(2w-1), heads) to a new window (bicubic)."""
    old_window, new_window = to_hw(old_window), to_hw(new_window)
    if old_window == new_window:
        return table
    old_hw = (2 * old_window[0] - 1, 2 * old_window[1] - 1)
    new_hw = (2 * new_window[0] - 1, 2 * new_window[1] - 1)
    if table.shape[0] != old_hw[0] * old_hw[1]:
        raise ValueError(f'relative position table has {table.shape[0]} rows, expected {old_hw[0] * old_hw[1]} '
                         f'for window {old_window}')
    grid = table.t().reshape(1, -1, *old_hw).float()
    grid = F.interpolate(grid, size=new_hw, mode='bicubic', align_corners=False)
    return grid.reshape(-1, new_hw[0] * new_hw[1]).t().contiguous().to(table.dtype)


def memoize(store: dict, key, build, max_entries: int = 8):
    """store[key], built by build() on first use (the dict emptied when full). Under torch.compile it is built
    inline: a dict filled while tracing is guarded on its contents, so the next call would recompile."""
    if torch.compiler.is_compiling():
        return build()
    value = store.get(key)
    if value is None:
        if len(store) >= max_entries:
            store.clear()
        value = store[key] = build()
    return value


class GridCache:
    """Per-grid-size cache for tensors derived from parameters (resized position encodings, agent biases).

    A tensor is reused only when building it again would give the same value and no autograd graph is needed:
    grad disabled (or the parameters frozen), and none of the source parameters modified in place since
    (``_version`` is part of the key, so ``load_state_dict`` invalidates it).
    """

    def __init__(self, max_entries: int = 8):
        self._store: dict = {}
        self.max_entries = max_entries

    def get(self, key, params: Sequence[nn.Parameter], build):
        # under torch.compile the build is traced into the graph (and is free at the training size); a Python-side
        # cache keyed on parameter identity and versions would only force recompiles
        if torch.compiler.is_compiling() or needs_grad(*params):
            return build()
        versions = tuple((id(p), p._version, p.device, p.dtype) for p in params)
        return memoize(self._store, (key, torch.is_inference_mode_enabled(), versions), build, self.max_entries)

    def clear(self):
        self._store.clear()

    # a module deep-copied or pickled must not carry tensors built for its source's parameters
    def __deepcopy__(self, memo):
        return GridCache(self.max_entries)

    def __getstate__(self):
        return {'max_entries': self.max_entries}

    def __setstate__(self, state):
        self.max_entries = state['max_entries']
        self._store = {}
