"""tools/benchmark_models.py: which (model, mode) rows a command line asks for (the measuring itself needs a GPU)."""
from types import SimpleNamespace

from tool_helpers import load_tool  # tests/tool_helpers.py


def test_rows_follow_each_mode_option_absent_bare_or_named():
    tool = load_tool('benchmark_models')
    # absent: None; given without names: []; with names: those
    args = SimpleNamespace(models=['a', 'b'], no_eager=False, native_layer_norm=None, fused_layer_norm=['timm_x'],
                           graph=[], compile=['b'], compile_cudagraphs=None, compile_cpp_wrapper=['a'])
    assert tool.measured_rows(args) == [('a', 'eager'), ('a', 'graph'), ('a', 'compile-cpp'), ('b', 'eager'),
                                        ('b', 'graph'), ('b', 'compile'), ('timm_x', 'fused-ln')]
    args = SimpleNamespace(models=['a'], no_eager=False, native_layer_norm=None, fused_layer_norm=None, graph=None,
                           compile=None, compile_cudagraphs=[], compile_cpp_wrapper=None)
    assert tool.measured_rows(args) == [('a', 'eager'), ('a', 'compile-cg')]
    # --no-eager: the other modes' rows alone, a bare mode option still meaning every model of --models
    args.no_eager, args.models, args.compile = True, ['a', 'b'], ['b']
    assert tool.measured_rows(args) == [('b', 'compile'), ('b', 'compile-cg'), ('a', 'compile-cg')]


def test_a_setting_that_raised_is_named_for_the_exit_status():
    tool = load_tool('benchmark_models')
    header = ['model', 'mode', 'infer img/s b64@224', 'infer GiB', 'train img/s b64@224', 'train GiB']
    assert tool.failed_settings(header, ['agent_swin_t', 'compile-cg', '9287', '0.55', 'error: RuntimeError', '-']) \
        == ['agent_swin_t compile-cg: train img/s b64@224']
    assert tool.failed_settings(header, ['flatten_swin_t', 'eager', '6820', '0.65', 'OOM', 'OOM']) == []
