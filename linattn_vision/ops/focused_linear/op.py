"""The focused-linear-attention op every FLatten model calls: registered torch.library ops with autograd, Triton
kernels on CUDA, the exact PyTorch path elsewhere.

`focused_linear_attention` dispatches: CUDA tensors of fp32/fp16/bf16 with a head layout the kernels take go to
`torch.ops.linattn.focused_linear_attention_fwd` (its backward is `..._bwd`); anything else, or everything inside
`use_reference()` / with LINATTN_FORCE_REFERENCE=1, runs `focused_linear_attention_reference`. The registered ops
are torch.library triton_ops: torch.compile traces into them (inductor sees and launches the kernels), while eager
calls run the same body directly. They also run on CPU: with TRITON_INTERPRET=1 set before the first call they run
the Triton kernels in Triton's interpreter, otherwise an exact PyTorch computation of the same outputs.
"""
import importlib
from typing import Optional

import torch
import torch.nn.functional as F

from ..._switch import Switch
from .._triton import INTERPRET, TRITON_FOUND, load_kernels
from .layout import kernels_support, tile_dims
from .reference import EPS_DENOM, EPS_RELU, focus_with_divisor, focused_linear_attention_reference

_FORCE_REFERENCE = Switch('LINATTN_FORCE_REFERENCE', default_on=False)
_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def use_reference(enabled: bool = True):
    """``with use_reference():`` forces the exact PyTorch path inside the block (e.g. to compare against the
    kernels)."""
    return _FORCE_REFERENCE.set(enabled)


def _load_kernels():
    return load_kernels(__package__ + '.kernels')


def _kernel_module():
    """The kernel module itself, for the ops' bodies (which run outside dynamo's tracing, where an import is fine;
    _load_kernels may answer True there while dynamo traces)."""
    return importlib.import_module(__package__ + '.kernels')


def _runs_triton(x: torch.Tensor, traceable: bool = False) -> bool:
    """Whether the kernels take x: CUDA tensors, or CPU ones under Triton's interpreter. In the traceable
    (registered op) bodies: CUDA only (interpreted kernels cannot be traced), and without touching load_kernels'
    registry: torch.compile runs these bodies while it still builds the guards of the calling frame, one of which
    is that registry's state (a change there fails the new guard at once)."""
    if traceable:
        return x.is_cuda and TRITON_FOUND
    return (x.is_cuda or INTERPRET) and _load_kernels() is not None


# ------------------------------------------------------------------------------------------ exact fallback

def _exact_core(q, k, v, s, pos, num_heads: int, focusing_factor: float):
    """out, kv / N, kmean in the kernels' padded state layout, computed in fp32 (or wider) with plain torch."""
    B, N, C = q.shape
    d = C // num_heads
    work = torch.promote_types(q.dtype, torch.float32)
    q, k, v, s = q.to(work), k.to(work), v.to(work), s.to(work)
    if pos is not None:
        k = k + pos.to(work)
    q = focus_with_divisor(q, s, focusing_factor).reshape(B, N, num_heads, d).transpose(1, 2)
    k = focus_with_divisor(k, s, focusing_factor).reshape(B, N, num_heads, d).transpose(1, 2)
    v = v.reshape(B, N, num_heads, d).transpose(1, 2)
    kv = k.transpose(-2, -1) @ v / N
    kmean = k.mean(dim=-2)
    out = (q @ kv) / (q @ kmean.unsqueeze(-1) + EPS_DENOM)
    return out.transpose(1, 2).reshape(B, N, C), kv, kmean


def _focus_backward_exact(g_phi, x, s, focusing_factor):
    """dL/dx and sum_tokens dL/da * a for phi(x) = a^p / ||a^p|| * ||a||, a = (relu(x) + eps) / s."""
    p = focusing_factor
    a = (F.relu(x) + EPS_RELU) / s
    b = a ** p
    n1, n2 = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    c = (g_phi * b).sum(-1, keepdim=True)
    g_a = p * a ** (p - 1) * (n1 / n2) * (g_phi - c * b / n2 ** 2) + c * a / (n1 * n2)
    return torch.where(x > 0, g_a / s, 0.0), (g_a * a).flatten(0, -2).sum(0)


def _exact_backward(dout, q, k, v, s, pos, num_heads: int, focusing_factor: float):
    """The kernels' backward in plain torch: recompute phi, then the chain rule through the core and phi."""
    B, N, C = q.shape
    d = C // num_heads
    work = torch.promote_types(q.dtype, torch.float32)
    xq, xk, v, s, dout = q.to(work), k.to(work), v.to(work), s.to(work), dout.to(work)
    if pos is not None:
        xk = xk + pos.to(work)

    def heads(t):
        return t.reshape(B, N, num_heads, d).transpose(1, 2)

    def merge(t):
        return t.transpose(1, 2).reshape(B, N, C)

    phi_q, phi_k = heads(focus_with_divisor(xq, s, focusing_factor)), heads(focus_with_divisor(xk, s, focusing_factor))
    v, dout = heads(v), heads(dout)
    kv = phi_k.transpose(-2, -1) @ v / N
    kmean = phi_k.mean(dim=-2, keepdim=True)
    den = (phi_q * kmean).sum(-1, keepdim=True) + EPS_DENOM
    g = dout / den
    dden = -(g * (phi_q @ kv / den)).sum(-1, keepdim=True)
    g_phi_q = g @ kv.transpose(-2, -1) + dden * kmean
    dkv = phi_q.transpose(-2, -1) @ g / N
    dkmean = (dden * phi_q).sum(-2, keepdim=True) / N
    g_phi_k = v @ dkv.transpose(-2, -1) + dkmean
    dv = phi_k @ dkv
    dq, ga_q = _focus_backward_exact(merge(g_phi_q), xq, s, focusing_factor)
    dk, ga_k = _focus_backward_exact(merge(g_phi_k), xk, s, focusing_factor)
    ds = -(ga_q + ga_k) / s
    return dq.to(q.dtype), dk.to(k.dtype), merge(dv).to(v.dtype), ds.float()


def _pack_state(kv, kmean, num_heads, head_dim):
    """(B, H, d, d), (B, H, d) -> the kernels' zero-padded fp32 state (B, layout.state_size): kv, then kmean."""
    h_pad, d_pad = tile_dims(num_heads, head_dim)
    B = kv.shape[0]
    mat = kv.new_zeros(B, h_pad, d_pad, d_pad, dtype=torch.float32)
    vec = kv.new_zeros(B, h_pad, d_pad, dtype=torch.float32)
    mat[:, :num_heads, :head_dim, :head_dim] = kv
    vec[:, :num_heads, :head_dim] = kmean
    return torch.cat([mat.flatten(1), vec.flatten(1)], 1)


# ---------------------------------------------------------------------------------------- registered ops
# The ops take the raw scale parameter (softplus runs inside) and pos as stored ((N, C) or (1, N, C), contiguous),
# so an eager call records no extra autograd nodes for them. They are triton_ops: torch.compile traces into their
# bodies, so inductor launches the kernels itself and fuses the partial sums, instead of calling back into this
# Python code (host time per call) for each op in a compiled step. The bodies are also their fake (meta) kernels.

@torch.library.triton_op('linattn::focused_linear_attention_fwd', mutates_args=())
def _fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: torch.Tensor, pos: Optional[torch.Tensor],
            num_heads: int, focusing_factor: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(q, k, v (B, N, C) with unit channel stride; scale: raw fp32 parameter of C elements, contiguous; pos:
    N * C contiguous values or None) -> (out contiguous in v's dtype, fp32 state kv / N and kmean (B,
    layout.state_size), saved for the backward)."""
    return _forward_impl(q, k, v, scale, pos, num_heads, focusing_factor, traceable=True)


def _forward_impl(q, k, v, scale, pos, num_heads, focusing_factor, traceable=False):
    if _runs_triton(q, traceable):
        return _kernel_module().forward(q, k, v, scale, pos, num_heads, focusing_factor, traceable)
    B, N, C = q.shape
    with torch.autocast(q.device.type, enabled=False):
        out, kv, kmean = _exact_core(q, k, v, F.softplus(scale.reshape(C).float()),
                                     None if pos is None else pos.reshape(N, C), num_heads, focusing_factor)
    # contiguous, as the kernels return them, whatever the inputs' strides
    return out.to(v.dtype).contiguous(), _pack_state(kv.float(), kmean.float(), num_heads, C // num_heads)


@torch.library.triton_op('linattn::focused_linear_attention_bwd', mutates_args=())
def _bwd_op(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: torch.Tensor,
            pos: Optional[torch.Tensor], state: torch.Tensor, num_heads: int,
            focusing_factor: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> (dq, dk, dv in the dtypes of q, k, v; dL/d scale fp32 in scale's shape). dk is also dL/d(k + pos)."""
    return _backward_impl(dout, q, k, v, scale, pos, state, num_heads, focusing_factor, traceable=True)


def _backward_impl(dout, q, k, v, scale, pos, state, num_heads, focusing_factor, traceable=False):
    if _runs_triton(q, traceable):
        dq, dk, dv, dscale = _kernel_module().backward(dout, q, k, v, scale, pos, state, num_heads,
                                                       focusing_factor, traceable)
        return dq, dk, dv, dscale.view(scale.shape)
    B, N, C = q.shape
    raw = scale.reshape(C).float()
    with torch.autocast(q.device.type, enabled=False):
        dq, dk, dv, ds = _exact_backward(dout, q, k, v, F.softplus(raw), None if pos is None else pos.reshape(N, C),
                                         num_heads, focusing_factor)
        dscale = torch.ops.aten.softplus_backward(ds, raw, 1, 20)
    return dq.contiguous(), dk.contiguous(), dv.contiguous(), dscale.reshape(scale.shape)


def _fwd_setup_context(ctx, inputs, output):
    q, k, v, scale, pos, num_heads, focusing_factor = inputs
    ctx.save_for_backward(q, k, v, scale, pos, output[1])
    ctx.num_heads, ctx.focusing_factor = num_heads, focusing_factor


def _fwd_backward(ctx, dout, _dstate=None, backward=torch.ops.linattn.focused_linear_attention_bwd):
    q, k, v, scale, pos, state = ctx.saved_tensors
    dq, dk, dv, dscale = backward(dout.contiguous(), q, k, v, scale, pos, state, ctx.num_heads,
                                  ctx.focusing_factor)
    dpos = None
    if pos is not None and ctx.needs_input_grad[4]:
        dpos = dk.sum(0, dtype=torch.float32).to(pos.dtype).view(pos.shape)
    return dq, dk, dv, dscale.to(scale.dtype), dpos, None, None


_fwd_op.register_autograd(_fwd_backward, setup_context=_fwd_setup_context)


class _EagerFocusedLinear(torch.autograd.Function):
    """The same forward and backward as the registered ops, for eager calls: a registered op costs a few hundred
    microseconds of host time per call (dispatcher, schema, autograd wrapper), which bounds eager training of a
    model with a dozen such blocks. torch.compile still sees the registered op."""

    @staticmethod
    def forward(ctx, q, k, v, scale, pos, num_heads, focusing_factor):
        out, state = _forward_impl(q, k, v, scale, pos, num_heads, focusing_factor)
        _fwd_setup_context(ctx, (q, k, v, scale, pos, num_heads, focusing_factor), (out, state))
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout):
        return _fwd_backward(ctx, dout, backward=_backward_impl)


# -------------------------------------------------------------------------------------------- public entry

def _check_inputs(q, k, v, scale, pos, num_heads):
    if q.dim() != 3:
        raise ValueError(f'q, k, v must be (B, N, C), got q of shape {tuple(q.shape)}')
    if k.shape != q.shape or v.shape != q.shape:
        raise ValueError(f'q, k, v shapes differ: {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}')
    B, N, C = q.shape
    if num_heads < 1 or C % num_heads:
        raise ValueError(f'channels {C} not divisible by num_heads {num_heads}')
    if scale.numel() != C:
        raise ValueError(f'scale must have C={C} elements ((C,) or (1, 1, C)), got shape {tuple(scale.shape)}')
    if pos is not None and pos.numel() != N * C:
        raise ValueError(f'pos must hold N*C = {N}*{C} values ((N, C) or (1, N, C)), got shape {tuple(pos.shape)}')


def focused_linear_attention(q, k, v, scale, pos=None, num_heads: int = 1, focusing_factor: float = 3):
    """Focused linear attention core, (B, N, C) -> (B, N, C) in v's dtype. See reference.py for the math.

    scale: raw (C,) or (1, 1, C) parameter (used through softplus); pos: None, (N, C) or (1, N, C), added to k.
    """
    _check_inputs(q, k, v, scale, pos, num_heads)
    B, N, C = q.shape
    head_dim = C // num_heads
    # device first: under torch.jit.trace (FLOP counters) sizes are tensors, and CPU tensors never need the layout
    use_kernels = (not _FORCE_REFERENCE.on and _runs_triton(q) and all(t.dtype in _KERNEL_DTYPES for t in (q, k, v))
                   and kernels_support(int(num_heads), int(head_dim),
                                       torch.float32 in (q.dtype, k.dtype, v.dtype)))
    if not use_kernels:
        return focused_linear_attention_reference(q, k, v, scale, pos, num_heads, focusing_factor)
    # the kernels take any batch / token strides (q, k, v are usually slices of one qkv tensor): no copies
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    # a model's fp32 parameters pass as they are (no reshape or cast nodes); anything else becomes fp32
    if scale.dtype != torch.float32 or not scale.is_contiguous():
        scale = scale.float().contiguous()
    if pos is not None and not pos.is_contiguous():
        pos = pos.contiguous()
    args = (q, k, v, scale, pos, num_heads, float(focusing_factor))
    if torch.compiler.is_compiling():
        return torch.ops.linattn.focused_linear_attention_fwd(*args)[0]
    return _EagerFocusedLinear.apply(*args)
