"""resize_grid / resize_axis run as products with F.interpolate's weight matrices (a Kronecker matrix on small
grids, per-axis matrices on large ones) and as F.interpolate under torch.compile; every way must give
F.interpolate's values and gradients (float64), in the parameter's precision under autocast, and work after a first
call under inference_mode."""
import zlib

import pytest
import torch
import torch.nn.functional as F

from linattn_vision.layers import resize_axis, resize_grid
from linattn_vision.layers.pos_embed import KRON_MAX_ELEMENTS

SIZES = [((7, 7), (56, 56)), ((7, 7), (14, 14)), ((7, 5), (3, 11)), ((12, 9), (12, 20)), ((1, 7), (5, 3)),
         ((30, 30), (7, 7)),
         ((7, 7), (256, 256)), ((40, 40), (30, 30))]  # the last two past KRON_MAX_ELEMENTS: two products


def _interpolate_grid(t, size, mode):
    flat = t.reshape(1, -1, *t.shape[-2:])
    kwargs = {} if mode == 'nearest' else {'align_corners': False}
    return F.interpolate(flat, size=size, mode=mode, **kwargs).reshape(*t.shape[:-2], *size)


@pytest.mark.parametrize('mode', ['bilinear', 'bicubic', 'nearest'])
@pytest.mark.parametrize('old,new', SIZES)
def test_resize_grid_matches_interpolate_values_and_gradients(mode, old, new):
    g = torch.Generator().manual_seed(zlib.crc32(repr((mode, old, new)).encode()))
    t = torch.randn(2, 3, *old, dtype=torch.float64, generator=g, requires_grad=True)
    grad_out = torch.randn(2, 3, *new, dtype=torch.float64, generator=g)
    out = resize_grid(t, new, mode)
    ref = _interpolate_grid(t, new, mode)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    grad, = torch.autograd.grad(out, t, grad_out)
    grad_ref, = torch.autograd.grad(ref, t, grad_out)
    # a gradient sums up to 256 x 256 products (magnitudes ~100): float64 rounding, relative ~1e-14
    torch.testing.assert_close(grad, grad_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('size', [1, 5, 9, 20, 56])
def test_resize_axis_matches_linear_interpolate(size):
    g = torch.Generator().manual_seed(size)
    t = torch.randn(2, 3, 9, 4, dtype=torch.float64, generator=g, requires_grad=True)
    out = resize_axis(t, 2, size)
    ref = F.interpolate(t.movedim(2, -1).reshape(1, -1, 9), size=size, mode='linear', align_corners=False)
    ref = ref.reshape(2, 3, 4, size).movedim(-1, 2)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    grad_out = torch.randn_like(ref)
    torch.testing.assert_close(torch.autograd.grad(out, t, grad_out)[0], torch.autograd.grad(ref, t, grad_out)[0],
                               rtol=1e-12, atol=1e-12)


def test_resize_keeps_the_parameter_precision_under_autocast():
    t = torch.randn(4, 7, 7)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = resize_grid(t, (14, 14))
        axis = resize_axis(t, 1, 12)
    assert out.dtype == torch.float32 and axis.dtype == torch.float32
    torch.testing.assert_close(out, _interpolate_grid(t, (14, 14), 'bilinear'), rtol=1e-6, atol=1e-6)


def test_resize_trains_after_a_first_call_under_inference_mode():
    t = torch.randn(3, 7, 7, requires_grad=True)
    with torch.inference_mode():
        first = resize_grid(t, (10, 10))
    out = resize_grid(t, (10, 10))  # the cached matrices must not be inference tensors
    out.sum().backward()
    torch.testing.assert_close(out.detach(), first)
    assert t.grad is not None and torch.isfinite(t.grad).all()


def test_resize_grid_same_size_is_the_input():
    t = torch.randn(3, 7, 7)
    assert resize_grid(t, (7, 7)) is t


def test_sizes_cover_both_product_forms():
    points = [old[0] * old[1] * new[0] * new[1] for old, new in SIZES]
    assert min(points) <= KRON_MAX_ELEMENTS < max(points)


def test_compiled_resize_matches_eager():
    t = torch.randn(3, 4, 7, 7, dtype=torch.float64, requires_grad=True)

    def resize(x):
        return resize_grid(x, (14, 10), 'bicubic') * 2 + resize_axis(x, 2, 14).sum(-1, keepdim=True)

    compiled = torch.compile(resize, backend='aot_eager', fullgraph=True)
    out, ref = compiled(t), resize(t)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    grad_out = torch.randn_like(ref)
    torch.testing.assert_close(torch.autograd.grad(out, t, grad_out)[0], torch.autograd.grad(ref, t, grad_out)[0],
                               rtol=1e-12, atol=1e-12)


def test_resize_on_the_meta_device():
    t = torch.randn(3, 7, 7, device='meta')  # shape-only runs (no autocast exists for 'meta')
    assert resize_grid(t, (14, 12)).shape == (3, 14, 12)
    assert resize_axis(t, 1, 9).shape == (3, 9, 7)
