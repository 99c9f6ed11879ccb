"""softmax_attention: scaled_dot_product_attention with the memory-efficient kernel tried first."""
import pytest
import torch
import torch.nn.functional as F

from linattn_vision.ops import softmax_attention

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')


def _reference(q, k, v, bias, scale):
    a = (q.double() * scale) @ k.double().transpose(-2, -1)
    if bias is not None:
        a = a + bias.double()
    return a.softmax(-1) @ v.double()


def _inputs(device, dtype, masked):
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 6, 49, 32, generator=gen).to(device, dtype).requires_grad_() for _ in range(3))
    bias = torch.randn(1, 6, 49, 49, generator=gen)
    if masked:
        bias = bias.masked_fill(torch.rand(1, 1, 49, 49, generator=gen) < 0.3, -100.0)
    return q, k, v, bias.to(device, dtype).requires_grad_()


@pytest.mark.parametrize('masked', [False, True])
def test_matches_float64_with_gradients_and_restores_backend_order(masked):
    order = torch._C._get_sdp_priority_order()
    q, k, v, bias = _inputs('cpu', torch.float32, masked)
    out = softmax_attention(q, k, v, bias, scale=0.2)
    ref_leaves = [t.detach().double().requires_grad_() for t in (q, k, v, bias)]
    ref = _reference(*ref_leaves, 0.2)
    dout = torch.randn_like(ref)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad(out, (q, k, v, bias), dout.float())
    for g, r in zip(grads, torch.autograd.grad(ref, ref_leaves, dout)):
        torch.testing.assert_close(g.double(), r, rtol=1e-4, atol=1e-5)
    assert torch._C._get_sdp_priority_order() == order
    assert torch.equal(softmax_attention(q, k, v), F.scaled_dot_product_attention(q, k, v))


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize('masked', [False, True])
def test_gpu_bf16_matches_float64_with_gradients(masked):
    q, k, v, bias = _inputs('cuda', torch.bfloat16, masked)
    out = softmax_attention(q, k, v, bias, scale=0.2)
    ref_leaves = [t.detach().double().requires_grad_() for t in (q, k, v, bias)]
    ref = _reference(*ref_leaves, 0.2)
    dout = torch.randn_like(ref)
    grads = torch.autograd.grad(out, (q, k, v, bias), dout.bfloat16())
    ref_grads = torch.autograd.grad(ref, ref_leaves, dout)
    assert out.isfinite().all() and all(g.isfinite().all() for g in grads)
    torch.testing.assert_close(out.double(), ref, rtol=3e-2, atol=3e-2)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g.double(), r, rtol=5e-2, atol=5e-2)
