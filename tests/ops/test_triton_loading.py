"""Loading the Triton kernel modules from code torch.compile traces."""
import torch

from linattn_vision.ops import _triton

MODULE = 'linattn_vision.ops.depthwise_conv.kernels'


def test_no_import_while_tracing(monkeypatch):
    """An import inside a traced function is a graph break (every FLatten block of a compiled model broke on its
    first call before): while tracing, a module not yet loaded reads as there where triton is installed."""
    monkeypatch.setattr(_triton, '_LOADED', {})

    @torch.compile(backend='eager', fullgraph=True)  # fullgraph: a graph break raises
    def f(x):
        return x + (1 if _triton.load_kernels(MODULE) is not None else 0)

    assert f(torch.zeros(2)).tolist() == [float(_triton.TRITON_FOUND)] * 2
    assert MODULE not in _triton._LOADED  # nothing imported while tracing
    assert _triton.load_kernels(MODULE) is not None or not _triton.TRITON_FOUND  # eager: imported
    assert MODULE in _triton._LOADED
