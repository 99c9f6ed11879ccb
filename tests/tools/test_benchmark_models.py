"""tools/benchmark_models.py: which (model, mode) rows a command line asks for (the measuring itself needs a GPU)."""
from types import SimpleNamespace

from tool_helpers import load_tool  # tests/tool_helpers.py


def test_rows_follow_each_mode_option_absent_bare_or_named():
    tool = load_tool('benchmark_models')
    # absent: None; given without names: []; with names: those
    args = SimpleNamespace(models=['a', 'b'], native_layer_norm=None, fused_layer_norm=['timm_x'], graph=[],
                           compile=['b'], compile_cudagraphs=None)
    assert tool.measured_rows(args) == [('a', 'eager'), ('a', 'graph'), ('b', 'eager'), ('b', 'graph'),
                                        ('b', 'compile'), ('timm_x', 'fused-ln')]
    args = SimpleNamespace(models=['a'], native_layer_norm=None, fused_layer_norm=None, graph=None, compile=None,
                           compile_cudagraphs=[])
    assert tool.measured_rows(args) == [('a', 'eager'), ('a', 'compile-cg')]
