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


def _tiny_classifier():
    import timm
    import torch

    import linattn_vision  # noqa: F401  (registers the models)
    torch.manual_seed(0)
    return timm.create_model('flatten_pvt_t', img_size=32, num_classes=6, embed_dims=(16, 32, 40, 64),
                             depths=(1, 1, 1, 1), drop_path_rate=0.)


def test_nan_check_trains_under_fp16_with_a_scaler_that_skips_overflowed_steps():
    import torch
    tool = load_tool('benchmark_models')
    # a scale of 2^24 overflows fp16 gradients: the scaler skips steps (lowering the scale) until they fit
    first, last, max_grad, skipped, finite = tool.nan_check(_tiny_classifier(), 30, torch.float16, batch=4, size=32,
                                                            num_classes=6, init_scale=2.0 ** 24)
    assert finite and 1 <= skipped < 30 and 0 < max_grad < float('inf')
    assert last < first
    # bf16 needs no scaler: no step skipped
    first, last, max_grad, skipped, finite = tool.nan_check(_tiny_classifier(), 3, torch.bfloat16, batch=4, size=32,
                                                            num_classes=6)
    assert finite and skipped == 0 and max_grad > 0


def test_nan_check_reports_a_model_whose_gradients_are_nan():
    import torch
    tool = load_tool('benchmark_models')
    model = _tiny_classifier()
    with torch.no_grad():
        model.head.weight[0, 0] = float('nan')
    *_, finite = tool.nan_check(model, 2, torch.bfloat16, batch=4, size=32, num_classes=6)
    assert not finite
