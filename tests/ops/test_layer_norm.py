"""The fused LayerNorm (fp32 statistics, output in another dtype): Triton kernel through the interpreter on CPU,
on the GPU for real, and the backbones' LayerNorm module (built into every backbone) that uses it in inference
under CUDA autocast."""
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.layers import LayerNorm as TimmLayerNorm

import linattn_vision  # noqa: F401  (registers the models)
from linattn_vision.layers import LayerNorm, fuse_layer_norms, fused_layer_norm
from linattn_vision.ops import layer_norm_to
from interpreter import run_in_interpreter  # tests/interpreter.py

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
# (rows, channels): Swin-T stage widths, a width that is no power of two, one row, rows not a multiple of a tile,
# more row blocks than backward programs (each program loops over several, the last one past the end)
SHAPES = [(37, 96), (5, 192), (3, 768), (1, 100), (130, 24), (600, 96)]


def _errors(device, out_dtype, in_dtype=torch.float32):
    """Per shape: max abs error of the output, and of dx, d weight, d bias, against float64 F.layer_norm (inputs
    with a large row offset, so the mean matters), and whether outputs are finite with the asked dtypes."""
    results = []
    gen = torch.Generator().manual_seed(0)
    for M, C in SHAPES:
        x = (torch.randn(M, C, generator=gen) * 3 + torch.randn(M, 1, generator=gen) * 10).to(in_dtype)
        w, b = torch.randn(C, generator=gen), torch.randn(C, generator=gen)
        dy = torch.randn(M, C, generator=gen)
        leaves = [t.to(device).requires_grad_() for t in (x, w, b)]
        y = layer_norm_to(leaves[0], (C,), leaves[1], leaves[2], 1e-5, out_dtype)
        grads = torch.autograd.grad(y, leaves, dy.to(device, out_dtype))
        ref_leaves = [t.double().requires_grad_() for t in (x, w, b)]
        ref = F.layer_norm(ref_leaves[0], (C,), ref_leaves[1], ref_leaves[2], 1e-5)
        ref_grads = torch.autograd.grad(ref, ref_leaves, dy.to(out_dtype).double())
        errs = [(a.double().cpu() - r).abs().max().item() / max(1.0, r.abs().max().item())
                for a, r in zip([y, *grads], [ref, *ref_grads])]
        results.append(dict(shape=[M, C], errors=errs, finite=all(bool(t.isfinite().all()) for t in (y, *grads)),
                            dtypes_ok=y.dtype == out_dtype and grads[0].dtype == in_dtype))
    return results


CHILD = r'''
import json, sys, torch
sys.path.insert(0, {here!r})
from linattn_vision.ops.layer_norm import op
assert op.runs_fused(torch.zeros(2, 4), torch.zeros(4), torch.zeros(4)), 'interpreter path not taken'
from test_layer_norm import _errors
print('RESULTS' + json.dumps({{'float16': _errors('cpu', torch.float16), 'float32': _errors('cpu', torch.float32)}}))
'''


def test_kernel_in_interpreter_matches_float64():
    results = run_in_interpreter(CHILD.format(here=str(Path(__file__).parent)), timeout=300)
    for dtype, tol in (('float16', 1e-2), ('float32', 1e-5)):
        for r in results[dtype]:
            assert r['finite'] and r['dtypes_ok'] and max(r['errors']) < tol, (dtype, r)


def test_fallback_is_layer_norm_then_cast():
    """Without the kernel (CPU tensors outside the interpreter): F.layer_norm in fp32, then the cast."""
    x = torch.randn(4, 7, 96)
    w, b = torch.randn(96), torch.randn(96)
    y = layer_norm_to(x, (96,), w, b, 1e-6, torch.bfloat16)
    assert y.dtype == torch.bfloat16
    assert torch.equal(y, F.layer_norm(x, (96,), w, b, 1e-6).to(torch.bfloat16))


def test_module_is_nn_layer_norm_on_cpu():
    m = LayerNorm(96, eps=1e-6)
    ref = torch.nn.LayerNorm(96, eps=1e-6)
    ref.load_state_dict(m.state_dict())
    assert list(m.state_dict()) == ['weight', 'bias']
    x = torch.randn(2, 5, 96)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert torch.equal(m(x), ref(x))


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize('out_dtype', [torch.bfloat16, torch.float16, torch.float32], ids=str)
def test_kernel_on_gpu_matches_float64(out_dtype):
    tol = {torch.bfloat16: 2e-2, torch.float16: 1e-2, torch.float32: 1e-5}[out_dtype]
    for r in _errors('cuda', out_dtype):
        assert r['finite'] and r['dtypes_ok'] and max(r['errors']) < tol, r


@pytest.mark.gpu
@requires_cuda
def test_module_fuses_inference_under_cuda_autocast_only():
    m = LayerNorm(96).cuda()
    with torch.no_grad():
        m.weight.normal_(), m.bias.normal_()
    ref = torch.nn.LayerNorm(96).cuda()
    ref.load_state_dict(m.state_dict())
    x = torch.randn(3, 50, 96, device='cuda') * 4 + 7
    with torch.autocast('cuda', dtype=torch.bfloat16):
        with torch.no_grad():
            y, y_ref = m(x), ref(x)
            with fused_layer_norm(False):
                y_off = m(x)
        y_grad = m(x)  # parameters need gradients: torch's LayerNorm (autocast runs it in fp32)
    assert y.dtype == torch.bfloat16 and y_ref.dtype == y_off.dtype == y_grad.dtype == torch.float32
    torch.testing.assert_close(y.float(), y_ref, rtol=2e-2, atol=2e-2)
    assert torch.equal(y_off, y_ref) and torch.equal(y_grad.detach(), y_ref) and y_grad.requires_grad
    assert torch.equal(m(x), y_ref)  # no autocast: torch's LayerNorm


@pytest.mark.parametrize('name', ['flatten_swin_t', 'agent_swin_t', 'flatten_pvt_t', 'agent_pvt_t', 'flatten_cswin_t',
                                  'agent_deit_t', 'flatten_pvt_v2_b0'])
def test_backbones_build_every_layer_norm_as_the_fused_one(name):
    model = timm.create_model(name, num_classes=5)
    norms = [type(m) for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and set(norms) == {LayerNorm}


@pytest.mark.parametrize('name', ['swin_tiny_patch4_window7_224', 'pvt_v2_b1'])
def test_fuse_layer_norms_keeps_parameters_and_outputs(name):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=5).eval()
    plain = [m for m in model.modules() if type(m) in (torch.nn.LayerNorm, TimmLayerNorm)]
    params = {id(p) for p in model.parameters()}
    keys = list(model.state_dict())
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        before = model(x)
        assert fuse_layer_norms(model) == len(plain) > 0
        after = model(x)
    assert not any(type(m) in (torch.nn.LayerNorm, TimmLayerNorm) for m in model.modules())
    assert {id(p) for p in model.parameters()} == params and list(model.state_dict()) == keys
    assert torch.equal(before, after)  # CPU: the module is nn.LayerNorm's computation
