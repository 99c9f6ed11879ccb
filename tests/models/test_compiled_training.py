"""Every model family trains under torch.compile (Dynamo + AOTAutograd; the aot_eager backend, as inductor's C++
build would dominate a CPU test): one training step's output and parameter gradients are eager's. Inductor on CUDA
is checked on the GPU machine (tests marked gpu, tools/gpu_check.sh)."""
import pytest
import timm
import torch

import linattn_vision  # noqa: F401  (registers the models)
from model_checks import draw_flatten_params, train_step

_SWIN = dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4), window_size=2)
_PVT = dict(embed_dims=(16, 32, 40, 64), depths=(1, 1, 1, 1))
# one small member per skeleton and attention, at 64x64
FAMILIES = {
    'flatten_swin_t': _SWIN, 'agent_swin_t': _SWIN,
    'flatten_pvt_t': _PVT, 'agent_pvt_t': _PVT,
    'flatten_pvt_v2_b0': dict(depths=(1, 1, 1, 1)),
    'flatten_cswin_t': dict(depth=(1, 1, 1, 1)), 'agent_cswin_t': dict(depth=(1, 1, 1, 1)),
    'flatten_deit_t': dict(depth=2), 'agent_deit_t': dict(depth=2),
}


def _grads(model):
    return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}


def _small(name):
    torch.manual_seed(0)
    return draw_flatten_params(timm.create_model(name, img_size=64, drop_path_rate=0., **FAMILIES[name])).train()


def _assert_compiled_steps_match(model, shapes, may_compile=2, rtol=1e-4, atol=1e-5, grad_atol=1e-5, device='cpu',
                                 backend='aot_eager'):
    """Eager and compiled training steps of ``model``, one per input shape (B, H, W) in turn: the outputs and every
    parameter gradient match (gradients to ``grad_atol`` of their largest entry). Only the first ``may_compile``
    shapes may compile (dynamo's automatic dynamic shapes mark a changed size symbolic on its second value); later
    shapes must reuse a graph."""
    compiled = torch.compile(model, backend=backend)
    torch._dynamo.reset()
    for i, shape in enumerate(shapes):
        x = torch.randn(shape[0], 3, *shape[1:], device=device)
        out, grads = train_step(model, x).detach(), _grads(model)
        model.zero_grad(set_to_none=True)
        with torch._dynamo.config.patch(error_on_recompile=i >= may_compile):
            out_c, grads_c = train_step(compiled, x).detach(), _grads(model)
        model.zero_grad(set_to_none=True)
        torch.testing.assert_close(out_c, out, rtol=rtol, atol=atol)
        assert grads_c.keys() == grads.keys() and len(grads) > 10
        for n, g in grads.items():
            torch.testing.assert_close(grads_c[n], g, rtol=rtol, atol=grad_atol * g.abs().max().item() + 1e-8,
                                       msg=lambda m, n=n, shape=shape: f'input {shape}, {n}: {m}')


BATCH_SIZES = [(2, 64, 64), (3, 64, 64), (5, 64, 64)]


@pytest.mark.parametrize('name', sorted(FAMILIES))
def test_model_under_autocast_compiles_as_one_graph(name):
    """An AMP training forward is one dynamo graph: a graph break splits inductor's fusion and costs host time, and
    one in the exact focused-linear path (a builtin torch 2.11's dynamo could not trace) recompiled its resumed frame
    on every call, so compiled FLatten-PVT-T trained at 13 img/s on an H100 (session 25)."""
    torch._dynamo.reset()
    model = _small(name)

    def loss(x):
        with torch.autocast('cpu', dtype=torch.bfloat16):
            return model(x).float().sum()

    explained = torch._dynamo.explain(loss)(torch.randn(2, 3, 64, 64))
    assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


@pytest.mark.parametrize('name', sorted(FAMILIES))
def test_compiled_training_step_matches_eager(name):
    _assert_compiled_steps_match(_small(name), BATCH_SIZES[:1])


@pytest.mark.parametrize('name', sorted(FAMILIES))
def test_compiled_training_at_new_batch_sizes(name):
    """A compiled model meeting a second batch size (the last partial batch, a validation batch) recompiles once
    with a symbolic batch (dynamo's automatic dynamic shapes); that graph serves every later size, matching eager.
    (The focused-linear op's launch grids under a symbolic batch: tests/ops/test_focused_linear_trace.py.)"""
    _assert_compiled_steps_match(_small(name), BATCH_SIZES)


IMAGE_SIZES = [(2, 64, 64), (2, 96, 96), (2, 128, 96)]


# two skeletons: PVT with agent attention and spatial reduction, and DeiT (Swin's windows under symbolic sizes take
# AOT autograd ~4 minutes on a CI machine: the GPU test below runs them)
@pytest.mark.parametrize('name', ['agent_pvt_t', 'flatten_deit_t'])
def test_compiled_training_at_new_image_sizes(name):
    """Detection / segmentation feed padded images of changing sizes, which dynamo recompiles with symbolic sizes
    (every size here may compile: how often depends on its guards). Each step matches eager. DeiT failed at the
    second size in torch's antialiased bicubic backward (the pos_embed resize) while PatchEmbed padded the image
    (dynamic_img_pad); it now pads only sizes that are not whole patches."""
    _assert_compiled_steps_match(_small(name), IMAGE_SIZES, may_compile=len(IMAGE_SIZES))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('name, shapes, may_compile', [
    ('flatten_swin_t', BATCH_SIZES, 2), ('agent_swin_t', BATCH_SIZES, 2), ('flatten_pvt_t', BATCH_SIZES, 2),
    ('flatten_pvt_t', IMAGE_SIZES, len(IMAGE_SIZES)), ('agent_pvt_t', IMAGE_SIZES, len(IMAGE_SIZES)),
    ('agent_swin_t', IMAGE_SIZES, len(IMAGE_SIZES)),
], ids=['flatten_swin_t-batch', 'agent_swin_t-batch', 'flatten_pvt_t-batch', 'flatten_pvt_t-image',
        'agent_pvt_t-image', 'agent_swin_t-image'])
def test_inductor_training_at_new_sizes_on_gpu(name, shapes, may_compile):
    """The same on CUDA with inductor: the focused-linear kernels launch on grids of the symbolic batch and token
    count (a second batch size failed there with "unhashable type: SymInt" before c50ce7f), and the agent kernels
    read token-major tensors of a symbolic token count (Agent-PVT-T failed in inductor before 4f06523)."""
    _assert_compiled_steps_match(_small(name).cuda(), shapes, may_compile, rtol=1e-3, atol=1e-4, grad_atol=1e-3,
                                 device='cuda', backend='inductor')


@pytest.mark.parametrize('name', sorted(FAMILIES))
def test_compiled_forward_graph_has_no_depthwise_convolution(name):
    """The FLatten / Agent depthwise convs reach inductor as one custom op each, not as aten.convolution: a graph with
    one convolution per ~300 nodes switches on inductor's layout optimisation, which gives the 4D tensors around a
    convolution NCHW's channels-last strides, and the Swin stages' (B, H, W, C) maps were then stored with H
    innermost (session 19). CSwin's LePE and PVTv2's mix-FFN convs go through the same op. On torch 2.11 this failed
    (is_exporting() is True in every dynamo trace there) until the ops read torch.export's own flag."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    forward_graphs = []

    def fw_compiler(gm, example_inputs):
        forward_graphs.append(gm)
        return make_boxed_func(gm)

    torch._dynamo.reset()
    model = _small(name)
    train_step(torch.compile(model, backend=aot_autograd(fw_compiler=fw_compiler)), torch.randn(2, 3, 64, 64))
    nodes = [n for gm in forward_graphs for n in gm.graph.nodes if n.op == 'call_function']
    assert sum(n.target is torch.ops.linattn.depthwise_conv_grid.default for n in nodes) >= 1
    depthwise = [n for n in nodes if n.target is torch.ops.aten.convolution.default and n.args[8] > 1]
    assert not depthwise, f'{len(depthwise)} depthwise aten.convolution in the forward graph'
