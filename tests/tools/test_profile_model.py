"""tools/profile_model.py: the kernel families its per-family totals add up (the profile itself needs a GPU)."""
import os
from types import SimpleNamespace

from tool_helpers import load_tool  # tests/tool_helpers.py


def test_kernels_fall_into_their_families():
    tool = load_tool('profile_model')
    expected = {
        '_bwd_kv_kernel': 'focused op',
        'void at::native::(anonymous namespace)::conv_depthwise2d_forward_kernel<2, c10::BFloat16>': 'depthwise conv',
        'fmha_cutlassF_bf16_aligned_64x64_rf_sm80(PyTorchMemEffAttention::Params)': 'attention (SDPA / agent)',
        'cudnn_generated_fort_native_sdpa_sm90_knob_7_64x64x64_4x1x1_kernel0_0': 'attention (SDPA / agent)',
        'sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1': 'matmul',
        'triton_per_fused_native_layer_norm_3': 'layer norm',
        'void at::native::(anonymous namespace)::multi_tensor_apply_kernel<FusedAdamMathFunctor>': 'optimizer',
        'void at::native::reduce_kernel<512, 1, ReduceOp<float, func_wrapper_t<float, sum>>>': 'reductions',
        'void at::native::elementwise_kernel<128, 4, direct_copy_kernel_cuda>': 'copies',
        'triton_poi_fused_add_mul_7': 'inductor fused (triton_*)',
        'void at::native::vectorized_elementwise_kernel<4, GeluCUDAKernelImpl>': 'elementwise',
        'some_new_kernel': 'other',
    }
    assert {name: tool.category(name) for name in expected} == expected


def test_family_totals_sum_per_call_and_sort_largest_first():
    tool = load_tool('profile_model')
    events = [SimpleNamespace(key='_fwd_out_kernel', self_device_time_total=3000.0, count=6),
              SimpleNamespace(key='_fwd_state_kernel', self_device_time_total=1000.0, count=6),
              SimpleNamespace(key='sm90_xmma_gemm_x', self_device_time_total=9000.0, count=30),
              # a torch op: CUDA time only through its kernels (children), not counted again
              SimpleNamespace(key='aten::copy_', self_device_time_total=0.0, count=12)]
    totals = tool.category_totals(events, iters=3)
    assert list(totals) == ['matmul', 'focused op']
    assert totals['focused op'] == (4000.0 / 3 / 1e3, 4) and totals['matmul'] == (3.0, 10)


def test_kernel_rows_leave_out_the_host_ops_that_launch_them():
    """With the host profiled, aten::mm reports the self device time of its kernel: counted once, as the kernel."""
    from torch.autograd import DeviceType
    tool = load_tool('profile_model')
    events = [SimpleNamespace(key='aten::mm', device_time_total=5.0, device_type=DeviceType.CPU),
              SimpleNamespace(key='nvjet_sm90_tst', device_time_total=5.0, device_type=DeviceType.CUDA),
              SimpleNamespace(key='aten::empty', device_time_total=0.0, device_type=DeviceType.CPU)]
    assert [e.key for e in tool.kernel_events(events)] == ['nvjet_sm90_tst']


def test_training_step_leaves_no_gradient_to_accumulate_into():
    """Each profiled training call backpropagates into fresh gradients, as after optimizer.zero_grad(): an
    accumulation (one add kernel per parameter) would be profiled work a training step does not do."""
    import torch
    tool = load_tool('profile_model')
    model = torch.nn.Linear(4, 3)
    seen = []
    model.weight.register_post_accumulate_grad_hook(lambda p: seen.append(p.grad.clone()))
    step = tool.make_step(model, model, torch.randn(2, 4), train=True)
    step()
    step()
    assert len(seen) == 2 and torch.equal(seen[0], seen[1])  # the second gradient is not the first one doubled
    assert all(p.grad is None for p in model.parameters())


def test_kernel_sources_are_found_by_name_among_fresh_cache_files(tmp_path):
    tool = load_tool('profile_model')
    (tmp_path / 'ab').mkdir()
    fresh = tmp_path / 'ab' / 'cab.py'
    fresh.write_text('@triton.jit\ndef triton_red_fused_native_layer_norm_backward_7(in_ptr0):\n    pass\n')
    stale = tmp_path / 'ab' / 'old.py'
    stale.write_text('def triton_poi_fused_add_3(in_ptr0):\n    pass\n')
    os.utime(stale, (1000.0, 1000.0))
    names = ['triton_red_fused_native_layer_norm_backward_7', 'triton_poi_fused_add_3', 'triton_poi_missing_1']
    found = tool.inductor_kernel_sources(names, since=2000.0, cache_dir=str(tmp_path))
    # the stale file (written before the profile started) and a name without a file are left out
    assert list(found) == ['triton_red_fused_native_layer_norm_backward_7']
    source = found['triton_red_fused_native_layer_norm_backward_7']
    assert 'def triton_red_fused_native_layer_norm_backward_7(' in source


def test_layout_decisions_record_each_graph_and_restore_inductor():
    import torch
    from torch._inductor.graph import GraphLowering
    from torch.fx.experimental.proxy_tensor import make_fx
    tool = load_tool('profile_model')
    weight = torch.randn(8, 4, 3, 3)
    gm = make_fx(lambda x: torch.nn.functional.conv2d(x, weight).relu())(torch.randn(1, 4, 8, 8))
    original = GraphLowering.decide_layout_opt
    with tool.layout_decisions() as decisions:
        expected = original(gm, is_inference=True)
        assert GraphLowering.decide_layout_opt(gm, is_inference=True) == expected
    assert decisions == [dict(nodes=len(gm.graph.nodes), layout_opt=expected, convolutions=1)]
    assert GraphLowering.decide_layout_opt is original
