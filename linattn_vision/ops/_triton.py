"""Lazy import of the ops' Triton kernel modules, and what their launchers share."""
import contextlib
import functools
import importlib
import importlib.util
import os

import torch

# Read once: CPU tensors go through Triton's interpreter only if the process started with TRITON_INTERPRET=1.
INTERPRET = os.environ.get('TRITON_INTERPRET', '0') == '1'
# module name -> module, or None where triton is missing (a plain dict, not lru_cache: torch.compile traces the ops'
# dispatch, and a dict lookup is what it handles without a graph break)
_LOADED: dict = {}
# Whether triton is installed, without importing it: what a kernel module not yet loaded is taken to give while
# torch.compile traces (it cannot trace an import; the op's implementation imports it when it first runs).
TRITON_FOUND = importlib.util.find_spec('triton') is not None


def load_kernels(module: str):
    """The kernel module (imported on first use, so TRITON_INTERPRET is read when its kernels are defined), or None
    where triton is missing: the ops then take their PyTorch paths. While torch.compile traces, a module not yet
    imported is reported as there (True) if triton is installed, else None: an import inside a traced function is a
    graph break (seen in every FLatten block of a compiled model whose first call was compiled)."""
    if module not in _LOADED:
        if torch.compiler.is_compiling():
            return TRITON_FOUND or None
        try:
            _LOADED[module] = importlib.import_module(module)
        except ImportError:
            _LOADED[module] = None
    return _LOADED[module]


def compiling_not_exporting() -> bool:
    """Whether torch.compile, not torch.export, traces this call: compiled graphs get the custom ops inductor wants,
    exported ones plain aten ops. torch.compiler.is_exporting() cannot tell them apart before torch 2.14: dynamo
    folds it to True in every trace (torch 2.11 measured), which sent compiled Agent-Swin-T's DWC to
    aten.convolution and switched on inductor's layout optimisation (session 22, H100). The flag torch.export sets
    while it traces is read instead (the public call where a torch no longer has it)."""
    exporting = getattr(torch.compiler, '_is_exporting_flag', None)
    if exporting is None:
        exporting = torch.compiler.is_exporting()
    return torch.compiler.is_compiling() and not exporting


# device type -> whether autocast knows it, read at import for the usual types: torch.amp.is_autocast_available is a
# builtin that torch 2.11's dynamo cannot trace, and the graph break it made in the exact focused-linear path
# recompiled the resumed frame on every call (compiled FLatten-PVT-T, whose stages 3-4 take that path, trained at
# 13 img/s on an H100, session 25). A plain dict, read without a graph break (see _LOADED).
_AUTOCAST_AVAILABLE = {t: torch.amp.is_autocast_available(t)
                       for t in ('cpu', 'cuda', 'xpu', 'mps', 'hpu', 'mtia', 'maia', 'xla', 'ipu', 'meta')}


def autocast_off(device_type: str):
    """A context that turns autocast off where it is on, so the ops' exact paths and the layers' resize products
    compute in their inputs' dtype. Only where on: an unconditional region leaves a wrap_with_autocast node in graphs
    that torch.export takes without autocast; and not for device types autocast does not know ('meta')."""
    available = _AUTOCAST_AVAILABLE.get(device_type)
    if available is None:  # another backend: asked once
        available = _AUTOCAST_AVAILABLE[device_type] = torch.amp.is_autocast_available(device_type)
    if available and torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def needs_grad(*tensors) -> bool:
    """Whether autograd would record an op on these tensors (None entries ignored): the fused inference-only
    paths (LayerNorm, DWC) and the per-size caches are taken only where it would not."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def constant_cache(maxsize: int):
    """functools.lru_cache for a function building constant tensors from sizes, device and dtype (pooling and
    interpolation matrices). The tensors are built as normal tensors even when first asked for under inference_mode,
    so that a later training step can save them for backward."""
    def wrap(build):
        @functools.lru_cache(maxsize=maxsize)
        @functools.wraps(build)
        def cached(*args):
            with torch.inference_mode(False):
                return build(*args)
        return cached
    return wrap


def sm_count(device) -> int:
    """Streaming multiprocessors of a CUDA device, which launch grids are sized by; 4 for the CPU tensors of
    Triton's interpreter (small grids)."""
    if device.type != 'cuda':
        return 4
    import torch
    return _sm_count(device.index if device.index is not None else torch.cuda.current_device())


@functools.lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    import torch
    return torch.cuda.get_device_properties(device_index).multi_processor_count
