"""What torch.compile sees of the registered focused-linear ops on CUDA tensors, checked without a GPU: traced with
fake CUDA tensors under Python functionalization (as AOTAutograd traces them), each op decomposes into its Triton
kernel launches and torch ops, and the kernels' mutation analysis (Triton's TTIR, generated here for an sm_90
target) finds exactly the buffers each kernel writes."""
import pytest
import torch

triton = pytest.importorskip('triton')


class _Sm90Driver:
    """Stands in for Triton's CUDA driver where there is no GPU: all that tracing asks of it is the target."""

    def get_current_target(self):
        from triton.backends.compiler import GPUTarget
        return GPUTarget('cuda', 90, 32)

    def get_active_torch_device(self):
        return torch.device('cuda')


def test_ops_trace_into_their_kernels_on_fake_cuda_tensors(monkeypatch):
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch._subclasses.functional_tensor import dispatch_functionalize
    from torch.fx.experimental.proxy_tensor import make_fx

    from linattn_vision.ops.focused_linear import kernels, op
    monkeypatch.setattr(kernels, 'sm_count', lambda device: 132)
    monkeypatch.setattr(op, '_runs_triton', lambda x, traceable=False: True)
    # (the driver object keeps the active driver in _active; monkeypatch puts the old one back, even None)
    monkeypatch.setattr(triton.runtime.driver, '_active', _Sm90Driver())

    def step(q, k, v, scale, pos):
        out, state = torch.ops.linattn.focused_linear_attention_fwd(q, k, v, scale, pos, 3, 3.0)
        return out, torch.ops.linattn.focused_linear_attention_bwd(out, q, k, v, scale, pos, state, 3, 3.0)

    B, N, C = 2, 200, 96
    with FakeTensorMode():
        q, k, v = torch.empty(B, N, 3, C, device='cuda', dtype=torch.bfloat16).unbind(2)
        scale, pos = torch.empty(1, 1, C, device='cuda'), torch.empty(N, C, device='cuda')
    graph = make_fx(dispatch_functionalize(step), tracing_mode='fake')(q, k, v, scale, pos).graph
    launches = [n for n in graph.nodes if n.target is torch.ops.higher_order.triton_kernel_wrapper_functional]
    written = [sorted(n.kwargs['tensors_to_clone']) for n in launches]
    assert written == [['part_ptr'], ['out_ptr'], ['dq_ptr', 'part_ptr'], ['dk_ptr', 'dv_ptr', 'part_ptr']]
    # q, k, v are read where they lie (row stride 3C): no copy of them before the kernels
    strides = [n.kwargs['kwargs'][f'{t}_sn'] for n in launches for t in 'qkv' if f'{t}_sn' in n.kwargs['kwargs']]
    assert strides == [3 * C] * 6
    assert not any('linattn' in str(n.target) for n in graph.nodes)
