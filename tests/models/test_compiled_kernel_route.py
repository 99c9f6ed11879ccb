"""Inductor lowers the Triton kernels' route of whole models at changing image sizes, without a GPU: the focused-linear
and agent ops are sent down their kernel route on CPU tensors (as on CUDA), Triton builds for an sm_90 target, and
inductor's generated code leaves the kernel launches out, so the compiled steps run (their outputs mean nothing; the
GPU tests check the numbers). Symbolic token counts broke this lowering twice (session 22): torch 2.11 copied the
focused-linear op's partial buffer onto itself (pytorch#189271), and inductor could not order the strides of the agent
op's head-split views saved for the backward ("cannot determine truth value of Relational")."""
import pytest
import timm
import torch

import linattn_vision  # noqa: F401  (registers the models)
from test_compiled_training import FAMILIES, IMAGE_SIZES
from fake_gpu import Sm90Driver  # tests/fake_gpu.py

triton = pytest.importorskip('triton')


@pytest.fixture
def kernel_route_on_cpu(monkeypatch):
    """The ops' kernel route on CPU tensors under torch.compile; returns a list counting the launches lowered."""
    import torch._inductor.ir as ir

    from linattn_vision.ops.agent import kernels as agent_kernels
    from linattn_vision.ops.agent import op as agent_op
    from linattn_vision.ops.focused_linear import kernels as focused_kernels
    from linattn_vision.ops.focused_linear import op as focused_op
    monkeypatch.setattr(focused_op, '_runs_triton', lambda x, traceable=False: True)
    monkeypatch.setattr(agent_op, 'INTERPRET', True)
    monkeypatch.setattr(agent_op, '_traces_kernels', lambda q: True)
    for module in (focused_kernels, agent_kernels):
        monkeypatch.setattr(module, 'sm_count', lambda device: 132)
    monkeypatch.setattr(triton.runtime.driver, '_active', Sm90Driver())
    launches = []
    init = ir.UserDefinedTritonKernel.__init__

    def counting_init(self, *args, **kwargs):
        launches.append(1)
        init(self, *args, **kwargs)
    monkeypatch.setattr(ir.UserDefinedTritonKernel, '__init__', counting_init)
    codegen = '_codegen' if hasattr(ir.UserDefinedTritonKernel, '_codegen') else 'codegen'  # (torch 2.11: codegen)
    monkeypatch.setattr(ir.UserDefinedTritonKernel, codegen, lambda self, wrapper, *args, **kwargs: None)
    import torch._inductor.config
    torch._dynamo.reset()
    with torch._inductor.config.patch(force_disable_caches=True):  # (a cached graph lowers nothing)
        yield launches
    torch._dynamo.reset()


@pytest.mark.slow
@pytest.mark.parametrize('name, launches_per_graph_pair', [('flatten_pvt_t', 16), ('agent_pvt_t', 20)])
def test_inductor_lowers_kernel_route_at_new_image_sizes(kernel_route_on_cpu, name, launches_per_graph_pair):
    """The example size and a second one (compiled with symbolic sizes) train compiled, and the forward and backward
    graphs of each compile lower the launches of the four attention blocks: FLatten two kernels forward and two
    backward per block, Agent three forward (aggregation, its combine, broadcast) and two backward. (Two sizes, not
    the GPU test's three: each compile takes about a minute on a CI machine.)"""
    torch.manual_seed(0)
    model = timm.create_model(name, img_size=64, drop_path_rate=0., **FAMILIES[name]).train()
    compiled = torch.compile(model, backend='inductor')
    for batch, height, width in IMAGE_SIZES[:2]:
        compiled(torch.randn(batch, 3, height, width)).float().square().mean().backward()
    # the example size's graphs, then the symbolic pair
    assert len(kernel_route_on_cpu) >= 2 * launches_per_graph_pair, len(kernel_route_on_cpu)
