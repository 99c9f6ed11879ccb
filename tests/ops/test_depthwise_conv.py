"""The token-grid depthwise conv with a residual (FLatten's ``x + dwc(v)``): Triton kernel through the interpreter on
CPU and on the GPU for real, the torch path where gradients are needed, both against float64 F.conv2d."""
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from linattn_vision.ops import depthwise_conv_tokens
from linattn_vision.ops.depthwise_conv import op
from interpreter import run_in_interpreter  # tests/interpreter.py
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
# (B, H, W, C, group, K): FLatten (head kernel shared by 3 heads), Agent (one kernel per channel, 3x3), a map smaller
# than the kernel, odd sizes, channels no power of two (PVT's 64 / 3 heads of 24 ...), more tokens than one tile
CASES = [(2, 7, 9, 96, 32, 5), (1, 5, 4, 24, 24, 3), (1, 2, 3, 48, 16, 5), (3, 11, 13, 72, 24, 5),
         (1, 40, 37, 64, 64, 3), (1, 1, 1, 16, 16, 3)]


def _reference(v, weight, bias, hw, residual):
    B, N, C = v.shape
    group = weight.shape[0]
    grid = v.double().transpose(1, 2).reshape(B, C, *hw)
    out = F.conv2d(grid, weight.double().repeat(C // group, 1, 1, 1),
                   None if bias is None else bias.double().repeat(C // group), padding=weight.shape[-1] // 2,
                   groups=C).flatten(2).transpose(1, 2)
    return out if residual is None else out + residual.double()


def _errors(device, dtype):
    """Per case (and with / without bias and residual): max abs error against float64, relative to the largest
    reference value, and whether the output has the expected dtype and is finite. v is a slice of a qkv tensor."""
    results = []
    gen = torch.Generator().manual_seed(0)
    for B, H, W, C, group, K in CASES:
        for with_extras in (True, False):
            qkv = torch.randn(B, H * W, 3 * C, generator=gen) * 3
            weight = torch.randn(group, 1, K, K, generator=gen)
            bias = torch.randn(group, generator=gen) if with_extras else None
            residual = torch.randn(B, H * W, C, generator=gen) if with_extras else None
            v = qkv.to(device, dtype)[..., 2 * C:]
            args = (v, weight.to(device), None if bias is None else bias.to(device), (H, W),
                    None if residual is None else residual.to(device, dtype))
            with torch.no_grad():
                out = depthwise_conv_tokens(*args)
            ref = _reference(*[a.cpu() if torch.is_tensor(a) else a for a in args])
            err = (out.double().cpu() - ref).abs().max().item() / max(1.0, ref.abs().max().item())
            results.append(dict(case=[B, H, W, C, group, K, with_extras], error=err,
                                ok=out.dtype == dtype and out.shape == v.shape and bool(out.isfinite().all())))
    return results


CHILD = r'''
import json, sys, torch
sys.path.insert(0, {here!r})
from linattn_vision.ops.depthwise_conv import op
assert op._runs_fused(torch.zeros(1, 4, 8), torch.zeros(8, 1, 3, 3), None, None), 'interpreter path not taken'
# the kernel has no backward: torch's path wherever a gradient is needed; and it reads channels at unit stride
assert not op._runs_fused(torch.zeros(1, 4, 8), torch.zeros(8, 1, 3, 3, requires_grad=True), None, None)
assert not op._runs_fused(torch.zeros(1, 8, 4).transpose(1, 2), torch.zeros(8, 1, 3, 3), None, None)
from test_depthwise_conv import _errors
print('RESULTS' + json.dumps({{'float16': _errors('cpu', torch.float16), 'float32': _errors('cpu', torch.float32)}}))
'''


def test_kernel_in_interpreter_matches_float64():
    results = run_in_interpreter(CHILD.format(here=str(Path(__file__).parent)))
    for dtype, tol in (('float16', 4e-3), ('float32', 1e-5)):
        assert len(results[dtype]) == 2 * len(CASES)
        for r in results[dtype]:
            assert r['ok'] and r['error'] < tol, (dtype, r)


def test_torch_path_matches_float64_with_gradients():
    """CPU (and any call needing gradients): F.conv2d on v's view, every gradient as float64's."""
    gen = torch.Generator().manual_seed(1)
    B, H, W, C, group, K = 2, 6, 5, 24, 8, 5
    qkv = torch.randn(B, H * W, 3 * C, generator=gen, requires_grad=True)
    weight = torch.randn(group, 1, K, K, generator=gen, requires_grad=True)
    bias = torch.randn(group, generator=gen, requires_grad=True)
    residual = torch.randn(B, H * W, C, generator=gen, requires_grad=True)
    leaves = (qkv, weight, bias, residual)
    assert not op._runs_fused(qkv[..., C:2 * C], weight, bias, residual)
    out = depthwise_conv_tokens(qkv[..., C:2 * C], weight, bias, (H, W), residual)
    dout = torch.randn(out.shape, generator=gen)
    grads = torch.autograd.grad(out, leaves, dout)
    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    ref = _reference(ref_leaves[0][..., C:2 * C], *ref_leaves[1:3], (H, W), ref_leaves[3])
    ref_grads = torch.autograd.grad(ref, ref_leaves, dout.double())
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g.double(), r, rtol=1e-5, atol=1e-5)


def _compiled_step_inputs(dtype):
    gen = torch.Generator().manual_seed(2)
    B, H, W, C, group, K = 2, 5, 7, 24, 8, 3
    qkv = torch.randn(B, H * W, 3 * C, generator=gen, dtype=dtype, requires_grad=True)
    weight = torch.randn(group, 1, K, K, generator=gen, dtype=dtype, requires_grad=True)
    bias = torch.randn(group, generator=gen, dtype=dtype, requires_grad=True)
    residual = torch.randn(B, H * W, C, generator=gen, dtype=dtype, requires_grad=True)
    return (qkv, weight, bias, residual), (H, W), torch.randn(B, H * W, C, generator=gen, dtype=dtype)


def test_compiled_path_is_one_opaque_op_with_float64_gradients():
    """Under torch.compile the conv is the custom op linattn::depthwise_conv_grid: the forward graph inductor gets has
    no aten.convolution (whose count switches on inductor's layout optimisation: see the op's module note), and
    output and every gradient stay float64's."""
    forward_graphs = []

    def fw_compiler(gm, example_inputs):
        forward_graphs.append(gm)
        return make_boxed_func(gm)

    def dwc(qkv, weight, bias, residual, hw):
        C = residual.shape[-1]
        return depthwise_conv_tokens(qkv[..., 2 * C:], weight, bias, hw, residual)

    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd
    torch._dynamo.reset()
    compiled = torch.compile(dwc, backend=aot_autograd(fw_compiler=fw_compiler), fullgraph=True)
    leaves, hw, dout = _compiled_step_inputs(torch.float64)
    out = compiled(*leaves, hw)
    grads = torch.autograd.grad(out, leaves, dout)
    targets = {node.target for node in forward_graphs[0].graph.nodes if node.op == 'call_function'}
    assert torch.ops.linattn.depthwise_conv_grid.default in targets
    assert torch.ops.aten.convolution.default not in targets
    C = leaves[3].shape[-1]
    ref_leaves = [t.detach().requires_grad_() for t in leaves]
    ref = _reference(ref_leaves[0][..., 2 * C:], *ref_leaves[1:3], hw, ref_leaves[3])
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    for g, r in zip(grads, torch.autograd.grad(ref, ref_leaves, dout)):
        torch.testing.assert_close(g, r, rtol=1e-12, atol=1e-12)


def test_compiled_path_under_autocast_gives_eagers_dtype_and_values():
    leaves, hw, dout = _compiled_step_inputs(torch.float32)
    qkv, weight, bias, residual = leaves
    C = residual.shape[-1]

    def dwc(qkv, weight, bias, residual):
        with torch.autocast('cpu', dtype=torch.bfloat16):
            return depthwise_conv_tokens(qkv[..., 2 * C:].bfloat16(), weight, bias, hw, residual.bfloat16())

    torch._dynamo.reset()
    eager, compiled = dwc(*leaves), torch.compile(dwc, backend='aot_eager', fullgraph=True)(*leaves)
    assert eager.dtype == compiled.dtype == torch.bfloat16
    torch.testing.assert_close(compiled.float(), eager.float(), rtol=0, atol=0)


def test_custom_op_registration():
    """torch.library's own checks of the op: schema, fake (meta) output, autograd registration, AOT dispatch."""
    (qkv, weight, bias, residual), (H, W), _ = _compiled_step_inputs(torch.float32)
    C = residual.shape[-1]
    x, full_weight, full_bias = qkv[..., 2 * C:], weight.repeat(3, 1, 1, 1), bias.repeat(3)
    for args in ((x, full_weight, full_bias, H, W), (x, full_weight, None, H, W)):
        torch.library.opcheck(torch.ops.linattn.depthwise_conv_grid.default, args)


@pytest.mark.parametrize('weight_shape, x_shape, hw, match', [
    ((8, 1, 4, 4), (1, 6, 8), (2, 3), 'odd K'),
    ((8, 2, 3, 3), (1, 6, 8), (2, 3), r'\(group, 1, K, K\)'),
    ((8, 1, 3, 3), (1, 6, 12), (2, 3), 'divisible by 8'),
    ((8, 1, 3, 3), (1, 7, 8), (2, 3), '2x3 grid'),
])
def test_bad_shapes_are_named(weight_shape, x_shape, hw, match):
    with pytest.raises(ValueError, match=match):
        depthwise_conv_tokens(torch.zeros(x_shape), torch.zeros(weight_shape), None, hw)


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16, torch.float32], ids=str)
def test_kernel_on_gpu_matches_float64(dtype):
    tol = {torch.bfloat16: 2e-2, torch.float16: 4e-3, torch.float32: 1e-5}[dtype]
    assert op._runs_fused(torch.zeros(1, 4, 8, device='cuda'), torch.zeros(8, 1, 3, 3, device='cuda'), None, None)
    for r in _errors('cuda', dtype):
        assert r['ok'] and r['error'] < tol, r


@pytest.mark.gpu
@requires_cuda
def test_kernel_under_autocast_gives_the_autocast_dtype():
    v = torch.randn(2, 30, 48, device='cuda')
    w, b = torch.randn(16, 1, 5, 5, device='cuda'), torch.randn(16, device='cuda')
    res = torch.randn(2, 30, 48, device='cuda', dtype=torch.bfloat16)
    with torch.no_grad(), torch.autocast('cuda', dtype=torch.bfloat16):
        out = depthwise_conv_tokens(v.bfloat16(), w, b, (5, 6), res)
        with torch.enable_grad():
            torch_path = depthwise_conv_tokens(v.bfloat16(), w.requires_grad_(), b, (5, 6), res)
    assert out.dtype == torch_path.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), torch_path.float(), rtol=2e-2, atol=5e-2)
