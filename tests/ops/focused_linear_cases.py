"""Shared checks for the focused-linear-attention op: one call runs forward + backward of the op under test on
fresh random inputs and compares output and every gradient with a float64 evaluation of the reference.

Imported by the GPU tests and by the Triton-interpreter child process (which must set TRITON_INTERPRET first).
"""
import torch

from linattn_vision.ops.focused_linear import focused_linear_attention, focused_linear_attention_reference


def make_inputs(B, N, num_heads, head_dim, dtype, device, with_pos=True, magnitude=1.0, seed=0):
    """Random raw q, k, v, scale, pos with the awkward cases in: an all-negative query row, an all-negative key
    row, one token at `magnitude` times the rest, scale both sides of zero."""
    gen = torch.Generator().manual_seed(seed)
    C = num_heads * head_dim

    def rand(*shape, std=1.0):
        return torch.randn(*shape, generator=gen, dtype=torch.float64) * std

    q, k, v = rand(B, N, C, std=magnitude), rand(B, N, C, std=magnitude), rand(B, N, C)
    q[0, min(1, N - 1)] = -q[0, min(1, N - 1)].abs()
    k[-1, N // 2] = -k[-1, N // 2].abs() - 0.1
    q[-1, N - 1] *= 10.0
    scale = rand(C, std=0.7)
    pos = rand(N, C, std=0.3 * magnitude) if with_pos else None
    cast = dict(dtype=dtype, device=device)
    return (q.to(**cast), k.to(**cast), v.to(**cast), scale.to(device=device, dtype=torch.float32),
            None if pos is None else pos.to(device=device, dtype=torch.float32))


def rel_err(a, b):
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def compare_with_float64(B, N, num_heads, head_dim, dtype, device, with_pos=True, focusing_factor=3.0,
                         magnitude=1.0, seed=0, op=focused_linear_attention):
    """Runs `op` forward and backward; returns {'out': rel err, 'q': ..., 'k', 'v', 'scale', 'pos'} against
    float64 on the same (rounded) inputs, plus 'finite' (no NaN/inf anywhere in outputs or grads)."""
    q, k, v, scale, pos = make_inputs(B, N, num_heads, head_dim, dtype, device, with_pos, magnitude, seed)
    leaves = [t.clone().requires_grad_() for t in (q, k, v, scale)] + (
        [pos.clone().requires_grad_()] if with_pos else [])
    out = op(leaves[0], leaves[1], leaves[2], leaves[3], leaves[4] if with_pos else None, num_heads,
             focusing_factor)
    gen = torch.Generator().manual_seed(seed + 1)
    dout = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    grads = torch.autograd.grad(out, leaves, dout.to(device=device, dtype=out.dtype))

    ref_leaves = [t.detach().double().cpu().requires_grad_() for t in leaves]
    ref = focused_linear_attention_reference(
        ref_leaves[0], ref_leaves[1], ref_leaves[2], ref_leaves[3], ref_leaves[4] if with_pos else None,
        num_heads, focusing_factor)
    ref_grads = torch.autograd.grad(ref, ref_leaves, dout)

    names = ['q', 'k', 'v', 'scale', 'pos'][:len(leaves)]
    errors = {'out': rel_err(out, ref)}
    errors.update({name: rel_err(g, rg) for name, g, rg in zip(names, grads, ref_grads)})
    errors['finite'] = bool(torch.isfinite(out).all()) and all(bool(torch.isfinite(g).all()) for g in grads)
    errors['dtypes_ok'] = out.dtype == v.dtype and all(g.dtype == t.dtype for g, t in zip(grads, leaves))
    return errors
