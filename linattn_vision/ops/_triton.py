"""Lazy import of the ops' Triton kernel modules."""
import importlib
import os

# Read once: CPU tensors go through Triton's interpreter only if the process started with TRITON_INTERPRET=1.
INTERPRET = os.environ.get('TRITON_INTERPRET', '0') == '1'
# module name -> module, or None where triton is missing (a plain dict, not lru_cache: torch.compile traces the ops'
# dispatch, and a dict lookup is what it handles without a graph break)
_LOADED: dict = {}


def load_kernels(module: str):
    """The kernel module (imported on first use, so TRITON_INTERPRET is read when its kernels are defined), or None
    where triton is missing: the ops then take their PyTorch paths."""
    if module not in _LOADED:
        try:
            _LOADED[module] = importlib.import_module(module)
        except ImportError:
            _LOADED[module] = None
    return _LOADED[module]
