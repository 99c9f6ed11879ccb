"""Agent pooling as two matrix products: the values and gradients of F.adaptive_avg_pool2d on the token grid."""
import pytest
import torch
import torch.nn.functional as F

from linattn_vision.ops import adaptive_avg_pool_tokens


def _adaptive_pool_of_grid(x, hw, out_hw):
    B, N, C = x.shape
    grid = x.transpose(1, 2).reshape(B, C, *hw)
    return F.adaptive_avg_pool2d(grid, out_hw).flatten(2).transpose(1, 2)


@pytest.mark.parametrize('hw, out_hw', [
    ((56, 56), (7, 7)),      # Agent-Swin-T stage 1 at 224: windows of 8
    ((256, 256), (7, 7)),    # at 1024: overlapping windows of 37-38
    ((13, 17), (4, 6)),      # no multiple, unequal sides
    ((5, 3), (7, 7)),        # more outputs than tokens (windows repeat tokens)
    ((1, 9), (1, 1)),
])
def test_matches_adaptive_avg_pool2d_in_float64(hw, out_hw):
    gen = torch.Generator().manual_seed(hw[0] * 100 + hw[1])
    x = torch.randn(2, hw[0] * hw[1], 6, dtype=torch.float64, generator=gen).requires_grad_()
    g = torch.randn(2, out_hw[0] * out_hw[1], 6, dtype=torch.float64, generator=gen)
    out = adaptive_avg_pool_tokens(x, hw, out_hw)
    ref = _adaptive_pool_of_grid(x, hw, out_hw)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    (grad,), (ref_grad,) = torch.autograd.grad(out, x, g), torch.autograd.grad(ref, x, g)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16], ids=str)
def test_half_inputs_average_without_overflow(dtype):
    """Values near the top of fp16's range over windows of ~37x37 tokens: the mean, not an overflowing sum."""
    x = (torch.rand(1, 256 * 256, 4, generator=torch.Generator().manual_seed(0)) * 6e4).to(dtype)
    out = adaptive_avg_pool_tokens(x, (256, 256), (7, 7))
    ref = _adaptive_pool_of_grid(x.double(), (256, 256), (7, 7))
    assert out.dtype == dtype and torch.isfinite(out).all()
    rel = ((out.double() - ref).abs() / ref.abs()).max().item()
    assert rel < (8e-3 if dtype == torch.bfloat16 else 2e-3), rel


def test_matrices_cached_under_inference_mode_serve_training():
    """Evaluation (inference_mode) first, then a training step at the same size: the cached window matrices are
    normal tensors that autograd can save."""
    x = torch.randn(2, 11 * 9, 4)
    with torch.inference_mode():
        adaptive_avg_pool_tokens(x, (11, 9), (3, 2))
    leaf = x.clone().requires_grad_()
    adaptive_avg_pool_tokens(leaf, (11, 9), (3, 2)).sum().backward()
    assert leaf.grad is not None and torch.isfinite(leaf.grad).all()


def test_rejects_tokens_that_do_not_form_the_grid():
    with pytest.raises(ValueError, match='50 tokens do not form the 7x8 grid'):
        adaptive_avg_pool_tokens(torch.zeros(1, 50, 3), (7, 8), (2, 2))


def test_traces_under_torch_compile():
    x = torch.randn(2, 13 * 17, 5)
    compiled = torch.compile(adaptive_avg_pool_tokens, fullgraph=True, dynamic=False)
    torch.testing.assert_close(compiled(x, (13, 17), (4, 6)), _adaptive_pool_of_grid(x, (13, 17), (4, 6)))
