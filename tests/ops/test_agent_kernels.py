"""The agent attention core's Triton kernels (ops/agent/kernels.py): forward and every gradient against a float64
evaluation, on CPU through Triton's interpreter (fp32 and fp16: the interpreter mishandles bf16) and on the GPU for
real; which calls take them."""
from pathlib import Path

import pytest
import torch

from linattn_vision.ops.agent import op as agent_op
from interpreter import run_in_interpreter  # tests/interpreter.py

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')

# (name, B, heads, N, M, agents, head_dim, biases, magnitude)
CASES = [
    ('swin_stage1_like', 2, 3, 70, 70, 9, 32, True, 1.0),
    # more token blocks than one program takes: the aggregation's splits and their combination
    ('aggregation_splits', 1, 2, 300, 300, 16, 16, True, 1.0),
    # keys from a reduced grid (Agent-PVT), a head dim and an agent count that are no powers of two
    ('reduced_keys_padded', 2, 1, 50, 13, 20, 24, True, 1.0),
    ('no_biases_49_agents', 2, 2, 40, 40, 49, 16, False, 1.0),
    ('64_agents', 1, 1, 70, 70, 64, 16, True, 1.0),
    # batch chunks of several batches in the backward programs (bias gradients summed over them)
    ('batch_chunks', 10, 1, 20, 20, 9, 16, True, 1.0),
    # saturated softmax in both steps (scores in the thousands)
    ('large_scores', 2, 2, 45, 45, 9, 32, True, 30.0),
]
TOL = {'float32': 1e-5, 'float16': 5e-3, 'bfloat16': 3e-2}


def _inputs(B, H, N, M, n, d, biases, magnitude, seed):
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)
    # q as the layers pass it: heads split from (B, N, C), a strided view
    q = rand(B, N, H, d).transpose(1, 2) * magnitude
    k, v = rand(B, H, M, d) * magnitude, rand(B, H, M, d)
    agent = rand(B, H, n, d) * magnitude
    agent_bias, query_bias = (rand(1, H, n, M), rand(1, H, N, n)) if biases else (None, None)
    return q, k, v, agent, agent_bias, query_bias, rand(B, H, N, d)


def _errors(device, dtype):
    """Per case: max relative error (to the float64 result's largest magnitude, at least 1) of the output and each
    gradient, the same for torch's route (SDPA / matmuls) in the same dtype, whether everything is finite, and
    whether the kernels took the call."""
    results = {}
    for i, (name, B, H, N, M, n, d, biases, magnitude) in enumerate(CASES):
        *inputs, grad = _inputs(B, H, N, M, n, d, biases, magnitude, seed=i)
        ref_leaves = [t.clone().requires_grad_() if t is not None else None for t in inputs]
        ref = agent_op.agent_attention_reference(*ref_leaves, scale=d ** -0.5)
        present = [t for t in ref_leaves if t is not None]
        ref_grads = torch.autograd.grad(ref, present, grad)
        leaves = [t.to(device, dtype).requires_grad_() if t is not None else None for t in inputs]
        fused = agent_op._runs_fused(*leaves, dropout_p=0.0)
        result = dict(fused=fused)
        for route, on in (('errors', True), ('torch_errors', False)):
            with agent_op.FUSED.set(on):
                out = agent_op.agent_attention(*leaves, scale=d ** -0.5)
                grads = torch.autograd.grad(out, [t for t in leaves if t is not None], grad.to(device, dtype))
            result[route] = [(a.double().cpu() - r).abs().max().item() / max(1.0, r.abs().max().item())
                             for a, r in zip([out, *grads], [ref, *ref_grads])]
            if on:
                result.update(finite=all(bool(t.isfinite().all()) for t in (out, *grads)),
                              shapes_ok=all(a.shape == r.shape for a, r in zip(grads, ref_grads)))
        results[name] = result
    # twice the same call: bitwise the same output and gradients (partials summed in a fixed order)
    *inputs, grad = _inputs(*CASES[1][1:], seed=0)
    runs = []
    for _ in range(2):
        leaves = [t.to(device, dtype).requires_grad_() for t in inputs]
        out = agent_op.agent_attention(*leaves)
        runs.append([out, *torch.autograd.grad(out, leaves, grad.to(device, dtype))])
    results['deterministic'] = all(torch.equal(a, b) for a, b in zip(*runs))
    # the registered ops on token-major (B, T, heads * d) tensors (heads > 0, what compiled graphs pass) give bitwise
    # what they give on the head-split views
    B, H, N, M, n, d = 2, 2, 37, 29, 9, 16
    q, k, v, agent, agent_bias, query_bias, grad = (t.to(device, dtype)
                                                    for t in _inputs(B, H, N, M, n, d, True, 1.0, seed=9))
    out, *saved = torch.ops.linattn.agent_attention_fwd(q, k, v, agent, agent_bias, query_bias, 0.25)
    grads = torch.ops.linattn.agent_attention_bwd(grad, q, k, v, agent, agent_bias, query_bias, *saved, 0.25, True,
                                                  True)
    merge = agent_op._merge_heads
    tokens = [merge(t) for t in (q, k, v, agent, grad)]
    out_t, *saved_t = torch.ops.linattn.agent_attention_fwd(*tokens[:4], agent_bias, query_bias, 0.25, H)
    grads_t = torch.ops.linattn.agent_attention_bwd(tokens[4], *tokens[:4], agent_bias, query_bias, *saved_t, 0.25,
                                                    True, True, H)
    results['token_major_equal'] = (torch.equal(merge(out), out_t) and
                                    all(torch.equal(merge(a), b) for a, b in zip(grads[:4], grads_t[:4])) and
                                    all(torch.equal(a, b) for a, b in zip(grads[4:], grads_t[4:])))
    # token-major inputs (agent_attention_tokens: the kernels split and merge the heads in place): the same numbers,
    # bitwise, as head-split inputs with the same values
    *inputs, grad = _inputs(*CASES[2][1:], seed=0)
    H = CASES[2][2]
    head_split = [t.to(device, dtype).requires_grad_() for t in inputs]
    out = agent_op.agent_attention(*head_split)
    grads = torch.autograd.grad(out, head_split[:4], grad.to(device, dtype))
    expected = [agent_op._merge_heads(t) for t in (out, *grads)]
    tokens = [agent_op._merge_heads(t.detach()).requires_grad_() for t in head_split[:4]]
    fused = agent_op._runs_fused(*tokens, *head_split[4:], dropout_p=0.0, heads=H)
    out = agent_op.agent_attention_tokens(*tokens, H, *head_split[4:])
    got = [out, *torch.autograd.grad(out, tokens, agent_op._merge_heads(grad.to(device, dtype)))]
    results['token_major'] = fused and all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(got, expected))
    # bias rows 16 elements apart (the eager op's own padded copies, or passed so) or not (alignment 1: 70 and 9
    # elements): the same numbers up to rounding (bitwise in the interpreter; on a GPU the kernels compiled for
    # the two row strides may contract multiplies and adds differently): the largest difference, relative
    *inputs, grad = _inputs(*CASES[0][1:], seed=0)
    runs = []
    for alignment, padded in ((1, False), (16, False), (1, True)):
        leaves = [t.to(device, dtype).requires_grad_() for t in inputs]
        biases = [agent_op._aligned_copy(b) if padded else b for b in leaves[4:]]
        assert padded == (biases[0].stride(-2) == 80)
        with agent_op._kernel_module().override(bias_row_alignment=alignment):
            out = agent_op.agent_attention(*leaves[:4], *biases)
            runs.append([out, *torch.autograd.grad(out, leaves, grad.to(device, dtype))])
    results['padded_bias_rows'] = max((a.double() - b.double()).abs().max().item() / max(1.0, b.abs().max().item())
                                      for run in runs[1:] for a, b in zip(run, runs[0]))
    return results


def _check(results, dtype):
    assert results.pop('deterministic') and results.pop('token_major') and results.pop('token_major_equal')
    assert results.pop('padded_bias_rows') < TOL[dtype]
    for name, r in results.items():
        assert r['fused'] and r['finite'] and r['shapes_ok'], (name, r)
        # within the dtype's tolerance, or (ill-conditioned cases: scores in the thousands lose digits in any fp32
        # evaluation) within four times torch's own error
        for err, torch_err in zip(r['errors'], r['torch_errors']):
            assert err < max(TOL[dtype], 4 * torch_err), (name, dtype, r)


CHILD = r'''
import json, sys, torch
sys.path.insert(0, {here!r})
from test_agent_kernels import _errors
print('RESULTS' + json.dumps({{'float32': _errors('cpu', torch.float32), 'float16': _errors('cpu', torch.float16)}}))
'''


def test_kernels_in_interpreter_match_float64():
    results = run_in_interpreter(CHILD.format(here=str(Path(__file__).parent)), timeout=600)
    for dtype in ('float32', 'float16'):
        _check(results[dtype], dtype)


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize('dtype', ['bfloat16', 'float16', 'float32'])
def test_kernels_on_gpu_match_float64(dtype):
    _check(_errors('cuda', getattr(torch, dtype)), dtype)


@pytest.mark.gpu
@requires_cuda
def test_kernels_on_gpu_at_agent_swin_t_training_shapes():
    """Agent-Swin-T's three agent stages at batch 64 (bf16), against the SDPA route on the same inputs."""
    for H, N, n in [(3, 3136, 9), (6, 784, 16), (12, 196, 49)]:
        gen = torch.Generator(device='cuda').manual_seed(N)
        q, k, v = (torch.randn(64, H, N, 32, device='cuda', generator=gen, dtype=torch.bfloat16) for _ in range(3))
        agent = torch.randn(64, H, n, 32, device='cuda', generator=gen, dtype=torch.bfloat16)
        biases = (torch.randn(1, H, n, N, device='cuda', generator=gen, dtype=torch.bfloat16),
                  torch.randn(1, H, N, n, device='cuda', generator=gen, dtype=torch.bfloat16))
        leaves = [t.requires_grad_() for t in (q, k, v, agent, *biases)]
        grad = torch.randn(64, H, N, 32, device='cuda', generator=gen, dtype=torch.bfloat16)
        results = []
        for fused in (True, False):
            with agent_op.FUSED.set(fused):
                out = agent_op.agent_attention(*leaves)
                results.append([out, *torch.autograd.grad(out, leaves, grad)])
        for a, b in zip(*results):
            assert a.isfinite().all()
            scale = b.float().abs().max().clamp_min(1.0)
            assert (a.float() - b.float()).abs().max() / scale < 3e-2


def _dispatch(device):
    """Which calls the kernels take (on CPU tensors: only under the interpreter): training calls only."""
    q, k, v, agent, agent_bias, query_bias, _ = (t.to(device, torch.float32).requires_grad_()
                                                 for t in _inputs(2, 3, 20, 20, 9, 16, True, 1.0, seed=0))
    tokens = [agent_op._merge_heads(t) for t in (q, k, v, agent)]

    def fused(*args, dropout_p=0.0):
        return agent_op._runs_fused(*args, dropout_p=dropout_p)
    with agent_op.FUSED.set(False):
        switched_off = fused(q, k, v, agent, agent_bias, query_bias)
    return {
        'plain': fused(q, k, v, agent, agent_bias, query_bias),
        'no_biases': fused(q, k, v, agent, None, None),
        'dropout': fused(q, k, v, agent, agent_bias, query_bias, dropout_p=0.1),
        'bias_per_batch': fused(q, k, v, agent, agent_bias.expand(2, -1, -1, -1), query_bias),
        'bias_shared_by_heads': fused(q, k, v, agent, agent_bias[:, :1], query_bias),
        'bias_strided': fused(q, k, v, agent, agent_bias.transpose(-2, -1).contiguous().transpose(-2, -1),
                              query_bias),
        'mixed_dtypes': fused(q, k, v, agent.half(), agent_bias, query_bias),
        'float64': fused(*(t.double() for t in (q, k, v, agent, agent_bias, query_bias))),
        '65_agents': fused(q, k, v, torch.zeros(2, 3, 65, 16, device=device, requires_grad=True), None, None),
        # windows as the batch (Agent-Swin's windowed blocks): batch x heads beyond CUDA's second grid axis
        'batch_x_heads_over_grid': fused(*(t[:1].expand(21846, -1, -1, -1) for t in (q, k, v, agent)), None, None),
        'switched_off': switched_off,
        'frozen_biases': fused(q, k, v, agent, agent_bias.detach(), query_bias.detach()),
        'bias_rows_padded': fused(q, k, v, agent, *(agent_op._aligned_copy(b) for b in (agent_bias, query_bias))),
        'bias_heads_apart': fused(q, k, v, agent, agent_bias, torch.cat([query_bias] * 2, dim=-2)[:, :, :20]),
        'inference': fused(*(t.detach() for t in (q, k, v, agent, agent_bias, query_bias))),
        # token-major inputs (agent_attention_tokens), 3 heads of 16 channels; 5 heads do not divide 48 channels
        'tokens': agent_op._runs_fused(*tokens, agent_bias, query_bias, 0.0, heads=3),
        'tokens_heads_not_dividing': agent_op._runs_fused(*tokens, None, None, 0.0, heads=5),
    }


EXPECTED_DISPATCH = {'plain': True, 'no_biases': True, 'dropout': False, 'bias_per_batch': False,
                     'bias_shared_by_heads': False, 'bias_strided': False, 'mixed_dtypes': False, 'float64': False,
                     '65_agents': False, 'batch_x_heads_over_grid': False, 'switched_off': False,
                     'frozen_biases': True, 'bias_rows_padded': True, 'bias_heads_apart': False, 'inference': False,
                     'tokens': True, 'tokens_heads_not_dividing': False}


def test_dispatch_in_interpreter():
    code = CHILD_DISPATCH.format(here=str(Path(__file__).parent))
    assert run_in_interpreter(code, timeout=300) == EXPECTED_DISPATCH


CHILD_DISPATCH = r'''
import json, sys, torch
sys.path.insert(0, {here!r})
from test_agent_kernels import _dispatch
print('RESULTS' + json.dumps(_dispatch('cpu')))
'''


def test_cpu_tensors_outside_the_interpreter_take_sdpa():
    assert _dispatch('cpu') == dict.fromkeys(EXPECTED_DISPATCH, False)


@pytest.mark.gpu
@requires_cuda
def test_dispatch_on_gpu():
    assert _dispatch('cuda') == EXPECTED_DISPATCH


TRACE_HEADS, TRACE_HEAD_DIM, TRACE_AGENTS = 3, 32, 9


@pytest.fixture
def fake_sm90(monkeypatch):
    """Kernel launches traced for an H100 without a GPU (as test_focused_linear_trace.py does)."""
    triton = pytest.importorskip('triton')
    from fake_gpu import Sm90Driver  # tests/fake_gpu.py
    from linattn_vision.ops.agent import kernels
    monkeypatch.setattr(kernels, 'sm_count', lambda device: 132)
    # (the driver object keeps the active driver in _active; monkeypatch puts the old one back, even None)
    monkeypatch.setattr(triton.runtime.driver, '_active', Sm90Driver())


def _trace_launches(qkv):
    """The kernel launches of the registered ops' forward and backward, traced as AOTAutograd does (fake CUDA
    tensors, Python functionalization), with q, k, v the head-split slices of ``qkv`` (B, N, 3, C) as the layers
    pass them."""
    from torch._subclasses.functional_tensor import dispatch_functionalize
    from torch.fx.experimental.proxy_tensor import make_fx
    H, d, n = TRACE_HEADS, TRACE_HEAD_DIM, TRACE_AGENTS

    def step(qkv, agent, agent_bias, query_bias):
        B, N = qkv.shape[:2]
        q, k, v = (t.reshape(B, N, H, d).transpose(1, 2) for t in qkv.unbind(2))
        out, *saved = torch.ops.linattn.agent_attention_fwd(q, k, v, agent, agent_bias, query_bias, 0.25)
        return out, torch.ops.linattn.agent_attention_bwd(out, q, k, v, agent, agent_bias, query_bias, *saved, 0.25,
                                                          True, True)

    B, N = qkv.shape[:2]
    with qkv.fake_mode:
        agent = torch.empty(B, H, n, d, device='cuda', dtype=torch.bfloat16)
        agent_bias = torch.empty(1, H, n, N, device='cuda', dtype=torch.bfloat16)
        query_bias = torch.empty(1, H, N, n, device='cuda', dtype=torch.bfloat16)
    graph = make_fx(dispatch_functionalize(step), tracing_mode='fake')(qkv, agent, agent_bias, query_bias).graph
    assert not any('linattn' in str(node.target) for node in graph.nodes)
    return [node for node in graph.nodes if node.target is torch.ops.higher_order.triton_kernel_wrapper_functional]


def test_ops_trace_into_their_kernels_on_fake_cuda_tensors(fake_sm90):
    """What torch.compile sees of the registered agent ops on CUDA tensors, checked without a GPU: each op
    decomposes into its kernel launches, whose mutation analysis (TTIR built for sm_90) finds exactly the buffers
    each kernel writes, and q, k, v are read where they lie."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        qkv = torch.empty(4, 200, 3, TRACE_HEADS * TRACE_HEAD_DIM, device='cuda', dtype=torch.bfloat16)
    launches = _trace_launches(qkv)
    written = [sorted(n.kwargs['tensors_to_clone']) for n in launches]
    assert written == [['part_ptr'], ['stats_ptr', 'va_ptr'], ['o_ptr'],
                       ['dbias_ptr', 'dq_ptr', 'part_ptr'], ['dbias_ptr', 'dk_ptr', 'dv_ptr', 'part_ptr']]
    token_strides = [n.kwargs['kwargs'][name] for n in launches for name in ('sqn', 'skm', 'svm')
                     if name in n.kwargs['kwargs']]
    assert token_strides and set(token_strides) == {3 * TRACE_HEADS * TRACE_HEAD_DIM}


def test_ops_trace_with_symbolic_batch_and_tokens(fake_sm90):
    """torch.compile marks the batch (and with mmdet's padded sizes, the tokens) dynamic once a second size comes:
    the launch grids must then be expressions of the symbolic sizes, and no guard may pin them (else every new size
    recompiles; min / max of the sizes guarded before _split used sym_min / sym_max)."""
    from torch._dynamo.source import LocalSource
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import DimDynamic, ShapeEnv, StatelessSymbolicContext

    shape_env = ShapeEnv()
    dynamic = StatelessSymbolicContext(dynamic_sizes=[DimDynamic.DYNAMIC] * 2 + [DimDynamic.STATIC] * 2)
    example = torch.empty(5, 200, 3, TRACE_HEADS * TRACE_HEAD_DIM, dtype=torch.bfloat16)
    with FakeTensorMode(shape_env=shape_env) as mode:
        qkv = mode.from_tensor(example, source=LocalSource('qkv'), symbolic_context=dynamic).cuda()
    B, N = qkv.shape[:2]
    assert isinstance(B, torch.SymInt) and isinstance(N, torch.SymInt)
    launches = _trace_launches(qkv)
    assert len(launches) == 5
    for launch in launches:
        (x, y, z), = launch.kwargs['grid']
        assert any(isinstance(g, torch.fx.Node) for g in (x, y, z)), launch.kwargs['grid']
    symbols = (B.node.expr, N.node.expr)
    # What guards there are come from contiguity checks of the partial buffers (a count of splits, chunks or token
    # blocks equal to 1 or not): a graph recompiles once where such a count drops to 1 (one token block; a batch
    # so large that the aggregation needs no split), not per size. Training batches and detection sizes:
    for b, t in [(2, 3136), (64, 3136), (16, 3136), (7, 1000), (64, 196), (3, 4096), (2, 1000), (64, 784)]:
        assert all(g.expr.xreplace(dict(zip(symbols, (b, t)))) for g in shape_env.guards), (b, t)
