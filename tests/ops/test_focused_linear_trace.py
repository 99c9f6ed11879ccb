"""What torch.compile sees of the registered focused-linear ops on CUDA tensors, checked without a GPU: traced with
fake CUDA tensors under Python functionalization (as AOTAutograd traces them), each op decomposes into its Triton
kernel launches and torch ops, and the kernels' mutation analysis (Triton's TTIR, generated here for an sm_90
target) finds exactly the buffers each kernel writes."""
import pytest
import torch

from fake_gpu import Sm90Driver  # tests/fake_gpu.py

triton = pytest.importorskip('triton')


def test_ops_trace_into_their_kernels_on_fake_cuda_tensors(monkeypatch):
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch._subclasses.functional_tensor import dispatch_functionalize
    from torch.fx.experimental.proxy_tensor import make_fx

    from linattn_vision.ops.focused_linear import kernels, op
    monkeypatch.setattr(kernels, 'sm_count', lambda device: 132)
    monkeypatch.setattr(op, '_runs_triton', lambda x, traceable=False: True)
    # (the driver object keeps the active driver in _active; monkeypatch puts the old one back, even None)
    monkeypatch.setattr(triton.runtime.driver, '_active', Sm90Driver())

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


@pytest.mark.parametrize('dynamic_batch', [True, False], ids=['batch_and_tokens', 'tokens'])
def test_ops_trace_with_symbolic_batch_and_tokens(monkeypatch, dynamic_batch):
    """torch.compile marks the batch dynamic once a second batch size comes (a validation batch, the last partial
    batch; mmdet's padded sizes: the tokens too). The ops then trace with symbolic B and N: the launch grids must be
    expressions of them (they failed with 'unhashable type: SymInt' on the GPU), with no guard pinning either. With
    only N symbolic (detection's fixed batch of changing image sizes) the split count is a constant: expressions of
    N there stopped torch 2.11's inductor (kernels._with_grid)."""
    from torch._dynamo.source import LocalSource
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch._subclasses.functional_tensor import dispatch_functionalize
    from torch.fx.experimental.proxy_tensor import make_fx
    from torch.fx.experimental.symbolic_shapes import DimDynamic, ShapeEnv, StatelessSymbolicContext

    from linattn_vision.ops.focused_linear import kernels, op
    monkeypatch.setattr(kernels, 'sm_count', lambda device: 132)
    monkeypatch.setattr(op, '_runs_triton', lambda x, traceable=False: True)
    monkeypatch.setattr(triton.runtime.driver, '_active', Sm90Driver())

    def step(qkv, scale, pos):
        q, k, v = qkv.unbind(2)
        out, state = torch.ops.linattn.focused_linear_attention_fwd(q, k, v, scale, pos, 3, 3.0)
        return out, torch.ops.linattn.focused_linear_attention_bwd(out, q, k, v, scale, pos, state, 3, 3.0)

    C = 96
    shape_env = ShapeEnv()
    dynamic = StatelessSymbolicContext(dynamic_sizes=[DimDynamic.DYNAMIC if dynamic_batch else DimDynamic.STATIC,
                                                      DimDynamic.DYNAMIC] + [DimDynamic.STATIC] * 2)
    example = torch.empty(5, 200, 3, C, dtype=torch.bfloat16)
    with FakeTensorMode(shape_env=shape_env) as mode:
        qkv = mode.from_tensor(example, source=LocalSource('qkv'), symbolic_context=dynamic).cuda()
        N = qkv.shape[1]
        scale, pos = torch.empty(1, 1, C, device='cuda'), torch.empty(N, C, device='cuda')
    B = qkv.shape[0]
    assert isinstance(B, torch.SymInt) == dynamic_batch and isinstance(N, torch.SymInt)
    graph = make_fx(dispatch_functionalize(step), tracing_mode='fake')(qkv, scale, pos).graph
    launches = [n for n in graph.nodes if n.target is torch.ops.higher_order.triton_kernel_wrapper_functional]
    assert len(launches) == 4
    for launch in launches:
        (batch, splits, one), = launch.kwargs['grid']
        # (batch, split) programs: computed from the symbolic batch, not constants of the example shape
        assert isinstance(batch, torch.fx.Node) == dynamic_batch == isinstance(splits, torch.fx.Node) and one == 1
        assert dynamic_batch or (isinstance(splits, int) and splits >= 132 // 5)
        assert all(isinstance(launch.kwargs['kwargs'][name], torch.fx.Node) for name in ('N', 'n_blocks'))
    # the guards the trace left (stride checks of the partial buffers) hold at every size a model meets, so none of
    # these sizes recompiles
    symbols = (B.node.expr if dynamic_batch else 5, N.node.expr)
    for b, n in [(1, 49), (2, 3136), (64, 3136), (128, 784), (2, 200 * 336), (7, 1000)]:
        values = dict(zip(symbols, (b, n))) if dynamic_batch else {N.node.expr: n}
        assert all(g.expr.xreplace(values) for g in shape_env.guards), (b, n)


@pytest.mark.parametrize('name', ['fwd_state', 'fwd_out', 'bwd_q', 'bwd_kv'])
def test_kernels_build_with_every_scalar_a_constant(name):
    """torch.compile's mutation analysis of a user-defined Triton kernel builds the kernel's TTIR and reads which
    pointers it stores to. torch 2.11 (the GPU machine's) builds it with every non-tensor argument as a constant, so
    N arrives as a Python int: a kernel that used it as a Triton scalar (``N.to(...)``) failed the analysis there
    (a warning), and inductor then took every input as written and copied each one around every launch. Each kernel
    must build both ways: here with the scalars constant, as that analysis does (tools/kernel_resources.py)."""
    from tool_helpers import load_tool  # tests/tool_helpers.py

    compiled, _ = load_tool('kernel_resources').compile_pass(name, 'swin_s1', 'bf16', scalars_constant=True)
    assert 'tt.store' in compiled.asm['ttir']
