"""Agent attention core (Agent Attention, ECCV 2024).

agent aggregation: V_A = softmax(A K^T * s + B1) V      (agents attend to all tokens)
agent broadcast:   O   = softmax(Q A^T * s + B2) V_A    (tokens attend to the agents)
In training on CUDA (and on CPU under Triton's interpreter) both steps, forward and backward, run in this package's
Triton kernels (kernels.py: every program owns a block of tokens, see its note), registered as torch.library
triton_ops so that torch.compile launches them itself. In inference, elsewhere, or with dropout on the attention
weights, inputs the kernels do not take, or LINATTN_AGENT_FUSED=0, both softmax steps go through
scaled_dot_product_attention (``ops.softmax_attention``) with an additive float bias that broadcasts over the batch.
One exception there:
SDPA's CUDA kernels parallelise over (batch, head, block of queries) only, and the aggregation step has just n
agents (49) as queries against all N tokens, so at small batch (a 1024x1024 image: 3 heads, 3 programs for 65536
tokens) it runs on a handful of SMs. There the aggregation is computed as matmul, softmax, matmul (an (n, N) score
matrix per head: linear in N, ~19 MB in bf16 for 3 heads at 65536 tokens). Where torch.compile traces a step
that trains the biases without the kernels, both steps are matmul, softmax, matmul too (see
_biases_trained_under_compile).
"""
import importlib
from typing import Optional

import torch
import torch.nn.functional as F

from ..._switch import Switch
from .._triton import INTERPRET, TRITON_FOUND, compiling_not_exporting, load_kernels, needs_grad
from ..softmax_attention import softmax_attention

# the Triton kernels (see the module note); LINATTN_AGENT_FUSED=0 or `with FUSED.set(False):` turns them off
FUSED = Switch('LINATTN_AGENT_FUSED', default_on=True)
_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# The kernels' tiles hold all agents x a whole head (up to 128 each), but the backward's fp32 partial sums (the agent
# and V_A gradients of every token block) grow with the padded agent count over the tokens per tile: with 81 agents
# (Agent-Swin-T's first stage in the downstream configs: 128 padded, 32 tokens a tile) they would take ~16x the bytes
# of q (~600 MB per block at 1333x800); up to 64 agents, 4x at most. More agents stay on SDPA.
MAX_AGENTS = 64
MAX_HEAD_DIM = 128
MAX_GRID_Y = 65535  # CUDA's limit on a grid's second axis

# SDPA's memory-efficient kernel takes this many queries per program; below MIN_SDPA_PROGRAMS programs it leaves
# the GPU idle
SDPA_QUERIES_PER_PROGRAM = 64
MIN_SDPA_PROGRAMS = 64


def _aggregation_by_matmul(agent: torch.Tensor, dropout_p: float) -> bool:
    """Whether the aggregation step should skip SDPA (too few programs to fill a GPU; see the module note)."""
    B, h, n, _ = agent.shape
    return agent.is_cuda and dropout_p == 0.0 and B * h * -(-n // SDPA_QUERIES_PER_PROGRAM) < MIN_SDPA_PROGRAMS


# Compiled steps that train the biases without the kernels run as matmul, softmax, matmul (see
# _biases_trained_under_compile); with this switch on (LINATTN_AGENT_COMPILED_SDPA=1, or `with COMPILED_SDPA.set():`)
# they stay on SDPA, with the biases from dense_bias (experimental: it failed on the whole Agent-Swin-T with torch
# 2.11, on an H100 and, with dense_copy's rows padded, again on an H200: SDPA's backward got a padded stage-3 bias
# laid out heads-innermost).
COMPILED_SDPA = Switch('LINATTN_AGENT_COMPILED_SDPA', default_on=False)


# Rows of the biases dense_copy returns are padded to this many elements: SDPA's memory-efficient kernel wants rows
# aligned to 8, and pads an unaligned bias itself, inside its lowering, as a copy whose layout inductor picks
# (compiled Agent-Swin-T training with 49 agents failed on that copy: "(*bias): last dimension must be contiguous",
# a padded stage-3 bias laid out heads-innermost; H100, torch 2.11). SDPA's composite skips its pad for a bias whose
# strides are multiples of 8, yet the whole model failed the same way with these rows (H200, torch 2.11): the bias that
# reaches SDPA there is not this copy's, for a reason not yet found.
BIAS_ROW_ALIGNMENT = 16


def _aligned_empty(shape, dtype, device, alignment: int = BIAS_ROW_ALIGNMENT) -> torch.Tensor:
    """An uninitialised tensor of ``shape`` with unit last stride and rows padded to ``alignment`` elements."""
    n = shape[-1]
    row = -(-n // alignment) * alignment
    return torch.empty(*shape[:-1], row, dtype=dtype, device=device).narrow(-1, 0, n)


def _aligned_copy(x: torch.Tensor, dtype: Optional[torch.dtype] = None,
                  alignment: int = BIAS_ROW_ALIGNMENT) -> torch.Tensor:
    """x copied (and cast to ``dtype``, default x's) into an _aligned_empty tensor."""
    return _aligned_empty(x.shape, dtype or x.dtype, x.device, alignment).copy_(x)


def _aligned_rows(bias: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """bias with its rows a multiple of BIAS_ROW_ALIGNMENT elements apart, for the kernels: a padded copy where they
    are not (kernels.CONFIG_OVERRIDE 'bias_row_alignment': 1 turns this off). Triton specialises such a row stride as
    divisible by 16 and loads the bias tiles in vectors: with 49 agents (Agent-Swin-T's stage 3, rows of 196 keys)
    the aggregation forward took 30 instead of 70 us per call (H100, session 20; compiled for sm_90 it needs 145
    registers instead of 255 with 120 bytes of spills). The copy is small (a bias has B * d / agents times fewer
    elements than q)."""
    alignment = _kernel_module().CONFIG_OVERRIDE.get('bias_row_alignment', BIAS_ROW_ALIGNMENT)
    if bias is None or bias.stride(-2) % alignment == 0:
        return bias
    return _aligned_copy(bias, alignment=alignment)


@torch.library.custom_op('linattn::dense_copy', mutates_args=())
def _dense_copy(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return _aligned_copy(x, dtype)


@_dense_copy.register_fake
def _(x, dtype):
    return _aligned_empty(x.shape, dtype, x.device)


_dense_copy.register_autograd(lambda ctx, grad: (grad.to(ctx.dtype), None),
                              setup_context=lambda ctx, inputs, output: setattr(ctx, 'dtype', inputs[0].dtype))


def dense_bias(bias: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A copy of ``bias`` in ``dtype`` with a unit last stride (SDPA's memory-efficient kernel wants it). Inductor
    lowers ``.contiguous()`` as a pointwise copy whose layout it picks itself (compiled Agent-Swin-T training passed
    SDPA a bias with a strided last dim on an H100, torch 2.11), but it keeps the layout an opaque op returns: where
    compiled bias training runs on SDPA (LINATTN_AGENT_COMPILED_SDPA=1), the copy is one, its rows padded so that
    SDPA need not pad it again (BIAS_ROW_ALIGNMENT). The default compiled graphs (the ones measured on a GPU) and
    torch.export keep the plain copy."""
    if COMPILED_SDPA.on and compiling_not_exporting():
        return _dense_copy(bias, dtype)
    if not torch.compiler.is_compiling() and not needs_grad(bias):
        # (inference, where GridCache keeps it) rows padded to 16 elements: SDPA's memory-efficient kernel then takes
        # the bias as it is (it pads rows that are not aligned to 8 with a copy of its own in every call). Biases
        # being trained stay plain: the kernels pad their rows themselves, without the autograd ops of this copy.
        return _aligned_copy(bias, dtype)
    # one copy that casts and lays out (`to` alone keeps a same-dtype tensor's strides)
    out = bias.to(dtype=dtype, memory_format=torch.contiguous_format)
    return out if out.is_contiguous() else out.contiguous()


def _biases_trained_under_compile(*biases) -> bool:
    """Whether torch.compile traces a step that trains the biases. There SDPA's memory-efficient backward rejected a
    bias with a strided last dim ("(*bias): last dimension must be contiguous", compiled Agent-Swin-T training on an
    H100, torch 2.11): inductor lays out the biases as it likes (its clone ignores memory_format). Such steps run as
    matmul, softmax, matmul, which take any layout."""
    return (not COMPILED_SDPA.on and torch.compiler.is_compiling()
            and any(b is not None and b.requires_grad for b in biases))


def _attend(query, key, value, bias, scale, dropout_p: float = 0.0):
    """softmax(query key^T * scale + bias) value in plain products (the softmax accumulates in fp32), with dropout
    on the attention weights as SDPA applies it."""
    scores = torch.matmul(query * scale, key.transpose(-2, -1))
    if bias is not None:
        scores = scores + bias
    weights = scores.softmax(dim=-1)
    if dropout_p > 0.0:
        weights = F.dropout(weights, dropout_p)
    return torch.matmul(weights, value)


# ------------------------------------------------------------------------------------------- Triton kernels

def _kernel_module():
    """The kernel module, imported where the ops' bodies run (outside dynamo's tracing)."""
    return importlib.import_module(__package__ + '.kernels')


def _bias_fits(bias, heads: int, rows: int, cols: int) -> bool:
    """Whether a bias is one the kernels take: None, or (heads, rows, cols) values broadcast over the batch with a
    unit column stride, rows at least a row apart and heads rows x that apart (what dense_bias builds: contiguous,
    or with its rows padded)."""
    if bias is None:
        return True
    if tuple(bias.shape[-3:]) != (heads, rows, cols) or any(s != 1 for s in bias.shape[:-3]):
        return False
    row_stride = bias.stride(-2)
    return (bias.stride(-1) == 1 or cols == 1) and row_stride >= cols and (
        heads == 1 or bias.stride(-3) == rows * row_stride)


def _runs_fused(q, k, v, agent, agent_bias, query_bias, dropout_p: float, heads: Optional[int] = None) -> bool:
    """Whether the Triton kernels take this call (see the module note): in training only. Their backward is what
    SDPA does badly (Agent-Swin-T's attention steps trained at batch 64: 0.35 vs 2.87 ms at stage 1, 0.18 vs 0.74
    at stage 2, 0.34 vs 0.41 at stage 3, H100); inference stays on SDPA, whose forward is fast (the whole model's
    eager inference at batch 64 ran at 6090 img/s on SDPA, 4431 on the kernels). heads: the inputs are token-major,
    (B, T, heads * d) (agent_attention_tokens), else head-split (B, H, T, d)."""
    if not FUSED.on or dropout_p > 0.0 or not (q.is_cuda or INTERPRET):
        return False
    if not needs_grad(q, k, v, agent, agent_bias, query_bias):
        return False
    if heads is None:
        if q.dim() != 4 or agent.dim() != 4 or k.shape != v.shape:
            return False
        B, H, N, d = q.shape
        n, M = agent.shape[2], k.shape[2]
        if k.shape[:2] != (B, H) or agent.shape[:2] != (B, H) or k.shape[3] != d or agent.shape[3] != d:
            return False
    else:
        if q.dim() != 3 or agent.dim() != 3 or k.shape != v.shape or heads < 1 or q.shape[2] % heads:
            return False
        (B, N, C), H, d = q.shape, heads, q.shape[2] // heads
        n, M = agent.shape[1], k.shape[1]
        if k.shape[0] != B or agent.shape[0] != B or k.shape[2] != C or agent.shape[2] != C:
            return False
    if n > MAX_AGENTS or d > MAX_HEAD_DIM or 0 in (B, H, N, n, M, d):
        return False
    if B * H > MAX_GRID_Y:  # the forward grids put batch x heads on CUDA's second grid axis
        return False
    if q.dtype not in _KERNEL_DTYPES or any(t.dtype != q.dtype for t in (k, v, agent)):
        return False
    if not (_bias_fits(agent_bias, H, n, M) and _bias_fits(query_bias, H, N, n)):
        return False
    if torch.compiler.is_compiling():
        return _traces_kernels(q)
    return load_kernels(__package__ + '.kernels') is not None


def _traces_kernels(q: torch.Tensor) -> bool:
    """Whether compiled graphs launch the kernels for q: CUDA tensors (interpreted kernels cannot be traced)."""
    return q.is_cuda and TRITON_FOUND


def _split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, T, heads * d) -> (B, heads, T, d), a view."""
    return t.unflatten(-1, (heads, -1)).transpose(1, 2)


def _merge_heads(t: torch.Tensor) -> torch.Tensor:
    """(B, H, T, d) -> (B, T, H * d): a view where t is laid out (B, T, H, d), as the kernels write their outputs."""
    return t.transpose(1, 2).flatten(2)


def _in_dtype(t: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    """t in dtype (None stays None), without a call where it already is: eager training steps are bound by the
    host's ops."""
    return t if t is None or t.dtype == dtype else t.to(dtype)


def _unit_last_stride(t):
    return t if t.stride(-1) == 1 else t.contiguous()


# The ops take the biases as the layers pass them (contiguous, (1, H, ...) or (H, ...)). Custom ops cannot return
# None, so a gradient that is not needed comes back as an empty tensor.

# heads > 0: q, k, v, agent, out and their gradients are token-major, (B, T, heads * d), and the kernels read and write
# the heads in place. Compiled graphs use this: head-split views, saved for the backward, were outputs of inductor's
# forward graph, and with a symbolic token count (new image sizes) inductor could not order their strides ("cannot
# determine truth value of Relational", Agent-PVT-T on CPU with the kernels' route forced, session 22).

@torch.library.triton_op('linattn::agent_attention_fwd', mutates_args=())
def _fwd_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, agent: torch.Tensor, agent_bias: Optional[torch.Tensor],
            query_bias: Optional[torch.Tensor], scale: float,
            heads: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> (out (B, H, N, d) laid out (B, N, H, d), or (B, N, heads * d) with heads, and the fp32 V_A and softmax
    statistics the backward takes)."""
    return _kernel_module().forward(q, k, v, agent, agent_bias, query_bias, scale, traceable=True, heads=heads)


@torch.library.triton_op('linattn::agent_attention_bwd', mutates_args=())
def _bwd_op(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, agent: torch.Tensor,
            agent_bias: Optional[torch.Tensor], query_bias: Optional[torch.Tensor], agent_v: torch.Tensor,
            stats_agents: torch.Tensor, scale: float, agent_bias_grad: bool,
            query_bias_grad: bool, heads: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                            torch.Tensor, torch.Tensor]:
    """-> (dq, dk, dv, d agent (laid out as their inputs' heads), fp32 d agent_bias, fp32 d query_bias; an empty
    tensor for a bias gradient not asked for)."""
    grads = _kernel_module().backward(dout, q, k, v, agent, agent_bias, query_bias, agent_v, stats_agents,
                                      scale, (agent_bias_grad, query_bias_grad), traceable=True, heads=heads)
    return tuple(q.new_empty(0) if g is None else g for g in grads)


def _setup_context(ctx, inputs, output):
    q, k, v, agent, agent_bias, query_bias, scale, *heads = inputs
    ctx.save_for_backward(q, k, v, agent, agent_bias, query_bias, *output[1:])
    ctx.scale, ctx.op_heads = scale, (heads[0] if heads else 0)


def _backward(ctx, dout, *_unused, backward=torch.ops.linattn.agent_attention_bwd):
    q, k, v, agent, agent_bias, query_bias, agent_v, stats_agents = ctx.saved_tensors
    bias_grads = (agent_bias is not None and ctx.needs_input_grad[4],
                  query_bias is not None and ctx.needs_input_grad[5])
    dq, dk, dv, dagent, dagent_bias, dquery_bias = backward(
        _unit_last_stride(dout), q, k, v, agent, agent_bias, query_bias, agent_v, stats_agents, ctx.scale,
        *bias_grads, ctx.op_heads)
    dagent_bias = dagent_bias.to(agent_bias.dtype).view(agent_bias.shape) if bias_grads[0] else None
    dquery_bias = dquery_bias.to(query_bias.dtype).view(query_bias.shape) if bias_grads[1] else None
    return dq, dk, dv, dagent, dagent_bias, dquery_bias, None, None


_fwd_op.register_autograd(_backward, setup_context=_setup_context)


def _eager_backward(dout, q, k, v, agent, agent_bias, query_bias, agent_v, stats_agents, scale,
                    agent_bias_grad, query_bias_grad, heads):
    return _kernel_module().backward(dout, q, k, v, agent, agent_bias, query_bias, agent_v, stats_agents,
                                     scale, (agent_bias_grad, query_bias_grad), heads=heads)


class _EagerAgentAttention(torch.autograd.Function):
    """The registered ops' forward and backward for eager calls, without the dispatcher's host time per call
    (torch.compile still sees the registered op). heads: token-major inputs and output, (B, T, heads * d), whose
    heads the kernels read and write in place (views made here record no autograd nodes)."""

    @staticmethod
    def forward(ctx, q, k, v, agent, agent_bias, query_bias, scale, heads):
        ctx.heads = heads
        if heads is not None:
            q, k, v, agent = (_split_heads(t, heads) for t in (q, k, v, agent))
        # (padded copies, kept for the backward; traced graphs pass the biases as they come)
        agent_bias, query_bias = _aligned_rows(agent_bias), _aligned_rows(query_bias)
        output = _kernel_module().forward(q, k, v, agent, agent_bias, query_bias, scale)
        _setup_context(ctx, (q, k, v, agent, agent_bias, query_bias, scale), output)
        return output[0] if heads is None else _merge_heads(output[0])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout):
        if ctx.heads is not None:
            dout = _split_heads(_unit_last_stride(dout), ctx.heads)
        grads = _backward(ctx, dout, backward=_eager_backward)
        if ctx.heads is not None:
            grads = tuple(_merge_heads(g) for g in grads[:4]) + grads[4:]
        return grads


def _fused(q, k, v, agent, agent_bias, query_bias, scale: float, heads: Optional[int] = None):
    q, k, v, agent = (_unit_last_stride(t) for t in (q, k, v, agent))
    args = (q, k, v, agent, agent_bias, query_bias, float(scale))
    if torch.compiler.is_compiling():
        return torch.ops.linattn.agent_attention_fwd(*args, heads or 0)[0]
    return _EagerAgentAttention.apply(*args, heads)


# ------------------------------------------------------------------------------------------------ the core

def agent_attention(q, k, v, agent, agent_bias=None, query_bias=None, scale=None, dropout_p: float = 0.0):
    """Args (head-split layout):
        q: (B, h, N, d), k, v: (B, h, Nk, d), agent: (B, h, n, d)
        agent_bias: broadcastable to (B, h, n, Nk) (B1), query_bias: broadcastable to (B, h, N, n) (B2)
        scale: softmax scale, default d ** -0.5
    Returns: (B, h, N, d)
    """
    if scale is None:
        scale = q.shape[-1] ** -0.5
    agent_bias, query_bias = _in_dtype(agent_bias, q.dtype), _in_dtype(query_bias, q.dtype)
    if _runs_fused(q, k, v, agent, agent_bias, query_bias, dropout_p):
        return _fused(q, k, v, agent, agent_bias, query_bias, scale)
    if _biases_trained_under_compile(agent_bias, query_bias):
        agent_v = _attend(agent, k, v, agent_bias, scale, dropout_p)
        return _attend(q, agent, agent_v, query_bias, scale, dropout_p)
    if _aggregation_by_matmul(agent, dropout_p):
        agent_v = _attend(agent, k, v, agent_bias, scale)
    else:
        agent_v = softmax_attention(agent, k, v, agent_bias, dropout_p=dropout_p, scale=scale)
    return softmax_attention(q, agent, agent_v, query_bias, dropout_p=dropout_p, scale=scale)


def agent_attention_tokens(q, k, v, agent, num_heads: int, agent_bias=None, query_bias=None, scale=None,
                           dropout_p: float = 0.0):
    """:func:`agent_attention` on token-major tensors (what AgentAttention's projections give):
        q: (B, N, C), k, v: (B, Nk, C), agent: (B, n, C), C = num_heads * d; biases as agent_attention's
    Returns: (B, N, C)
    Eager training on the kernels reads and writes the heads in place: no head split or merge ops, whose autograd
    nodes (about twenty per call, forward and backward) cost host time in a training step that is bound by it.
    """
    if scale is None:
        scale = (q.shape[-1] // num_heads) ** -0.5
    agent_bias, query_bias = _in_dtype(agent_bias, q.dtype), _in_dtype(query_bias, q.dtype)
    if _runs_fused(q, k, v, agent, agent_bias, query_bias, dropout_p, heads=num_heads):
        return _fused(q, k, v, agent, agent_bias, query_bias, scale, heads=num_heads)
    out = agent_attention(*(_split_heads(t, num_heads) for t in (q, k, v, agent)), agent_bias, query_bias,
                          scale=scale, dropout_p=dropout_p)
    return _merge_heads(out)


def agent_attention_reference(q, k, v, agent, agent_bias=None, query_bias=None, scale=None):
    """Plain softmax-matmul evaluation (use in float64 as the test oracle)."""
    if scale is None:
        scale = q.shape[-1] ** -0.5
    a = (agent * scale) @ k.transpose(-2, -1)
    if agent_bias is not None:
        a = a + agent_bias
    agent_v = a.softmax(dim=-1) @ v
    b = (q * scale) @ agent.transpose(-2, -1)
    if query_bias is not None:
        b = b + query_bias
    return b.softmax(dim=-1) @ agent_v
