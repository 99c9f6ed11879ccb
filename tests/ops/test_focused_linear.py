"""Focused linear attention op: the reference against the official formulation, the registered torch.library ops
(exact CPU path, autograd, fake/compile), dispatch and input errors; GPU tests run the Triton kernels."""
import pytest
import torch

from linattn_vision.ops.focused_linear import (
    focused_linear_attention, focused_linear_attention_reference, op as op_module, use_reference)
from focused_linear_cases import compare_with_float64, make_inputs
from tool_helpers import load_tool  # tests/tool_helpers.py

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')


# the baseline row of the op benchmark (tools/benchmark_attention.py)
official_formulation = load_tool('benchmark_attention').official_formulation


def test_reference_matches_official_formulation():
    q, k, v, scale, pos = make_inputs(2, 49, 3, 16, torch.float64, 'cpu')
    scale, pos = scale.double(), pos.double()
    ours = focused_linear_attention_reference(q, k, v, scale.reshape(1, 1, -1), pos.reshape(1, 49, -1), 3)
    theirs = official_formulation(q, k, v, scale.reshape(1, 1, -1), pos.reshape(1, 49, -1), 3)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_reference_half_inputs_up_to_1e3_stay_finite(dtype):
    q, k, v, scale, pos = make_inputs(2, 30, 2, 16, dtype, 'cpu', magnitude=1e3)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    out = focused_linear_attention_reference(q, k, v, scale, pos, 2)
    out.float().sum().backward()
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_exact_path_under_autocast_computes_as_without(dtype):
    """An AMP model calls the op on CPU (or with the reference forced) inside autocast, which would run the
    reference's products in half precision: there 1 / (phi(q) . kmean + eps) overflowed fp16 for a head whose
    focused query is tiny (a token negative in that head only) and the output was NaN (found by a 30-step fp16
    training run of FLatten-PVT on CPU). The exact path computes as without autocast, gradients included."""
    q, k, v, scale, pos = make_inputs(2, 30, 2, 16, dtype, 'cpu')
    q[:, :5, :16] = -q[:, :5, :16].abs()  # five tokens negative in head 0 and not in head 1
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    out = focused_linear_attention(q, k, v, scale, pos, 2)
    grads = torch.autograd.grad(out.float().square().sum(), (q, k, v))
    with torch.autocast('cpu', dtype=dtype):
        out_amp = focused_linear_attention(q, k, v, scale, pos, 2)
    grads_amp = torch.autograd.grad(out_amp.float().square().sum(), (q, k, v))  # (backward outside, as AMP does)
    assert torch.isfinite(out_amp).all()
    assert torch.equal(out_amp, out) and all(torch.equal(a, b) for a, b in zip(grads_amp, grads))


def test_exact_path_compiles_under_autocast_as_one_graph(monkeypatch):
    """torch 2.11's dynamo cannot trace torch.amp.is_autocast_available (a builtin): the exact path called it per
    call, which broke the graph there and recompiled the resumed frame on every call (compiled FLatten-PVT-T, whose
    stages 3-4 take the exact path, trained at 13 img/s on an H100). The path asks it nothing per call and compiles
    under autocast as one graph, with the eager numbers."""
    def untraceable(device_type):
        raise AssertionError(f'torch.amp.is_autocast_available({device_type!r}) called per call')

    monkeypatch.setattr(torch.amp, 'is_autocast_available', untraceable)
    inputs = make_inputs(2, 30, 2, 16, torch.float32, 'cpu')

    def core(q, k, v, scale, pos):
        return focused_linear_attention(q, k, v, scale, pos, 2)

    torch._dynamo.reset()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        eager = core(*inputs)
        compiled = torch.compile(core, backend='eager', fullgraph=True)(*inputs)
    assert eager.dtype == torch.float32 and torch.equal(compiled, eager)


def test_exported_exact_path_is_plain_aten_ops():
    """torch.export of a module calling the op off-GPU: plain aten ops another runtime knows (no linattn op, no
    autocast region), the eager numbers."""
    class Core(torch.nn.Module):
        def forward(self, q, k, v, scale, pos):
            return focused_linear_attention(q, k, v, scale, pos, 2)

    inputs = make_inputs(2, 30, 2, 16, torch.float32, 'cpu')
    exported = torch.export.export(Core(), inputs)
    targets = [str(n.target) for n in exported.graph.nodes if n.op == 'call_function']
    assert targets and all(t.startswith('aten.') for t in targets), targets
    torch.testing.assert_close(exported.module()(*inputs), Core()(*inputs), rtol=0, atol=0)


# (B, N, heads, head_dim, with_pos, focusing_factor)
OP_CASES = [(2, 37, 3, 16, True, 3.0), (1, 23, 1, 24, False, 2.5), (2, 17, 4, 8, True, 3.0)]


@pytest.mark.parametrize('B,N,H,d,with_pos,p', OP_CASES)
def test_registered_op_exact_path_matches_float64(B, N, H, d, with_pos, p):
    """The registered op (forward + autograd through the backward op) on CPU without Triton: exact path."""
    def call_op(q, k, v, scale, pos, num_heads, focusing_factor):
        out, _ = torch.ops.linattn.focused_linear_attention_fwd(q, k, v, scale, pos, num_heads, focusing_factor)
        return out

    errors = compare_with_float64(B, N, H, d, torch.float32, 'cpu', with_pos, p, op=call_op)
    assert errors['finite'] and errors['dtypes_ok'], errors
    for key, err in errors.items():
        if key not in ('finite', 'dtypes_ok'):
            assert err < 1e-5, (key, errors)


def test_registered_ops_pass_opcheck():
    q, k, v, scale, pos = make_inputs(2, 11, 2, 16, torch.float32, 'cpu')
    q, k, v, scale = (t.requires_grad_() for t in (q, k, v, scale))
    torch.library.opcheck(torch.ops.linattn.focused_linear_attention_fwd.default, (q, k, v, scale, pos, 2, 3.0),
                          test_utils=('test_schema', 'test_faketensor', 'test_autograd_registration'))
    out, state = torch.ops.linattn.focused_linear_attention_fwd(q, k, v, scale, pos, 2, 3.0)
    torch.library.opcheck(torch.ops.linattn.focused_linear_attention_bwd.default,
                          (torch.randn_like(out), q.detach(), k.detach(), v.detach(), scale.detach(), pos,
                           state.detach(), 2, 3.0),
                          test_utils=('test_schema', 'test_faketensor'))


def test_torch_compile_traces_through_the_op():
    q, k, v, scale, pos = make_inputs(2, 13, 2, 16, torch.float32, 'cpu')

    def f(q, k, v, scale, pos):
        return torch.ops.linattn.focused_linear_attention_fwd(q, k, v, scale, pos, 2, 3.0)[0]

    leaves = [t.clone().requires_grad_() for t in (q, k, v, scale, pos)]
    compiled = torch.compile(f, backend='aot_eager', fullgraph=True)
    out = compiled(*leaves)
    grads = torch.autograd.grad(out.sum(), leaves)
    eager_leaves = [t.clone().requires_grad_() for t in (q, k, v, scale, pos)]
    eager = f(*eager_leaves)
    eager_grads = torch.autograd.grad(eager.sum(), eager_leaves)
    torch.testing.assert_close(out, eager)
    for g, eg in zip(grads, eager_grads):
        torch.testing.assert_close(g, eg)


def test_cpu_dispatch_is_the_reference_and_accepts_model_shapes():
    q, k, v, scale, pos = make_inputs(2, 16, 2, 16, torch.float32, 'cpu')
    out = focused_linear_attention(q, k, v, scale.reshape(1, 1, -1), pos.reshape(1, 16, -1), num_heads=2)
    ref = focused_linear_attention_reference(q, k, v, scale, pos, 2)
    assert torch.equal(out, ref)
    with use_reference():
        assert op_module._FORCE_REFERENCE.on
        assert torch.equal(focused_linear_attention(q, k, v, scale, pos, num_heads=2), ref)
    assert not op_module._FORCE_REFERENCE.on


@pytest.mark.parametrize('bad, message', [
    (dict(q=torch.randn(2, 8)), 'must be \\(B, N, C\\)'),
    (dict(k=torch.randn(2, 8, 16)), 'shapes differ'),
    (dict(num_heads=3), 'not divisible by num_heads 3'),
    (dict(scale=torch.randn(8)), 'scale must have C=32'),
    (dict(pos=torch.randn(7, 32)), 'pos must hold N\\*C'),
])
def test_bad_inputs_raise_clear_errors(bad, message):
    args = dict(q=torch.randn(2, 8, 32), k=torch.randn(2, 8, 32), v=torch.randn(2, 8, 32), scale=torch.randn(32),
                pos=torch.randn(8, 32), num_heads=2)
    args.update(bad)
    with pytest.raises(ValueError, match=message):
        focused_linear_attention(**args)


# ------------------------------------------------------------------------------------------------------ GPU

GPU_TOL = {torch.float32: 2e-5, torch.float16: 3e-3, torch.bfloat16: 2e-2}
GPU_CASES = [  # (B, N, heads, head_dim); fp32 inputs with states above 4K values take the exact path
    (2, 3136, 3, 32), (3, 197, 1, 64), (2, 1000, 6, 32), (1, 77, 2, 48), (2, 50, 3, 24), (2, 45, 16, 32),
    (2, 70, 2, 16), (2, 130, 32, 16),
]


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize('B,N,H,d', GPU_CASES)
def test_triton_matches_float64(B, N, H, d, dtype):
    errors = compare_with_float64(B, N, H, d, dtype, 'cuda', with_pos=(H % 2 == 1), seed=B * N + H)
    assert errors['finite'] and errors['dtypes_ok'], errors
    for key, err in errors.items():
        if key not in ('finite', 'dtypes_ok'):
            assert err < GPU_TOL[dtype], (key, errors)


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16], ids=str)
def test_triton_half_inputs_up_to_1e3(dtype):
    errors = compare_with_float64(2, 500, 3, 32, dtype, 'cuda', magnitude=1e3)
    assert errors['finite'], errors
    assert errors['out'] < GPU_TOL[dtype], errors


@pytest.mark.gpu
@requires_cuda
def test_triton_non_integer_focusing_factor():
    errors = compare_with_float64(2, 300, 2, 32, torch.float32, 'cuda', focusing_factor=2.5)
    assert all(v < GPU_TOL[torch.float32] for k, v in errors.items() if k not in ('finite', 'dtypes_ok')), errors


@pytest.mark.gpu
@requires_cuda
def test_triton_deterministic_and_compiles():
    q, k, v, scale, pos = make_inputs(4, 3136, 3, 32, torch.bfloat16, 'cuda')
    leaves = [t.clone().requires_grad_() for t in (q, k, v, scale, pos)]
    runs = []
    for fn in (focused_linear_attention, focused_linear_attention,
               torch.compile(focused_linear_attention, fullgraph=True)):
        out = fn(*leaves[:4], leaves[4], 3)
        runs.append([out] + list(torch.autograd.grad(out.float().square().sum(), leaves)))
    for a, b in zip(runs[0], runs[1]):
        assert torch.equal(a, b)
    for a, b in zip(runs[0], runs[2]):
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-3)


@pytest.mark.gpu
@requires_cuda
def test_compiled_op_at_new_batch_and_token_counts():
    """A compiled step meeting a second batch size / token count recompiles with symbolic sizes (automatic dynamic
    shapes; a validation batch, mmdet's padded images): the kernels then launch on symbolic grids. Every size matches
    the eager op, and the third size reuses the symbolic graph (no recompile)."""
    torch._dynamo.reset()
    compiles = []

    def backend(gm, example_inputs):
        compiles.append([i.shape if isinstance(i, torch.Tensor) else i for i in example_inputs])
        from torch._inductor.compile_fx import compile_fx
        return compile_fx(gm, example_inputs)

    def attention(q, k, v, scale, pos):
        return focused_linear_attention(q, k, v, scale, pos, 3)

    def step(fn, leaves):
        out = fn(*leaves)
        return [out, *torch.autograd.grad(out.float().square().sum(), leaves)]
    compiled = torch.compile(attention, backend=backend)
    for B, N in [(2, 200), (3, 300), (5, 1000)]:
        leaves = [t.clone().requires_grad_() for t in make_inputs(B, N, 3, 32, torch.bfloat16, 'cuda', seed=B)]
        for a, b in zip(step(attention, leaves), step(compiled, leaves)):
            assert torch.isfinite(b).all()
            torch.testing.assert_close(b, a, rtol=2e-2, atol=2e-3)
    assert len(compiles) == 2, compiles  # the example size, then one symbolic graph for the others


@pytest.mark.gpu
@requires_cuda
def test_inductor_launches_the_kernels_itself(monkeypatch):
    """The registered ops are triton_ops: inductor's generated code launches the four kernels, it does not call
    back into the ops. Compiled before any eager call has loaded the kernel module (as a script that compiles its
    model first does): the ops' bodies, traced while the frame's guards are built, must not load it then."""
    from torch._inductor.utils import run_and_get_code

    from linattn_vision.ops import _triton
    monkeypatch.setattr(_triton, '_LOADED', {})
    q, k, v, scale, pos = make_inputs(2, 200, 3, 32, torch.bfloat16, 'cuda')
    leaves = [t.clone().requires_grad_() for t in (q, k, v, scale, pos)]

    def step(q, k, v, scale, pos):
        out = focused_linear_attention(q, k, v, scale, pos, 3)
        out.float().square().sum().backward()
        return out
    torch._dynamo.reset()
    _, codes = run_and_get_code(torch.compile(step), *leaves)
    code = '\n'.join(codes)
    for kernel in ('_fwd_state_kernel', '_fwd_out_kernel', '_bwd_q_kernel', '_bwd_kv_kernel'):
        assert kernel in code, kernel
    assert 'torch.ops.linattn.' not in code  # (an opaque op is called as torch.ops.linattn.<name>.default)


@pytest.mark.parametrize('num_heads, head_dim, half_ok, fp32_ok', [
    (3, 32, True, True),      # FLatten-Swin-T stage 1: state 4 x 32 x 32
    (1, 64, True, True),      # FLatten-PVT-T stage 1
    (3, 24, True, True),      # head dim no power of two: padded to 32
    (6, 32, True, False),     # Swin-T stage 2: 8 x 32 x 32, too large for fp32 dot operands
    (32, 16, True, False),    # 32 heads of 16
    (16, 32, False, False),   # state too large for the kernels' shared memory: exact path
    (2, 256, False, False),
    (33, 16, False, False),
])
def test_kernel_layout_routing(num_heads, head_dim, half_ok, fp32_ok):
    from linattn_vision.ops.focused_linear.layout import kernels_support
    assert kernels_support(num_heads, head_dim, fp32=False) == half_ok
    assert kernels_support(num_heads, head_dim, fp32=True) == fp32_ok


def test_model_traces_with_torch_jit_trace():
    """FLOP counters (mmengine, fvcore) trace models with torch.jit.trace, where sizes are tensors."""
    import timm
    import linattn_vision  # noqa: F401
    model = timm.create_model('flatten_pvt_v2_b0').eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        traced = torch.jit.trace(model, x, check_trace=False)
        torch.testing.assert_close(traced(x), model(x))


def test_every_supported_layout_has_a_launch_configuration():
    """Each pass finds a tuned configuration for every head layout the kernels take, with whole token blocks per
    split and enough splits for the tokens, no more warps than (padded) heads; fp32 keeps two pipeline stages (twice
    the shared memory per stage)."""
    pytest.importorskip('triton')
    from linattn_vision.ops.focused_linear import kernels
    from linattn_vision.ops.focused_linear.layout import kernels_support
    layouts = [(h, d) for h in range(1, 33) for d in (16, 24, 32, 48, 64, 96, 128) if kernels_support(h, d)]
    assert (3, 32) in layouts and (32, 16) in layouts and len(layouts) > 20
    for heads, head_dim in layouts:
        for name in ('fwd_state', 'fwd_out', 'bwd_q', 'bwd_kv'):
            for fp32 in (False, True):
                cfg = kernels._launch_config(name, heads, head_dim, 1000, 3, torch.device('cpu'), fp32)
                assert cfg['BLOCK_N'] in (16, 32, 64) and cfg['num_warps'] in (2, 4, 8)
                # a batched dot spreads warps over heads only (one head runs as a 2D dot)
                assert cfg['H_PAD'] == 1 or cfg['num_warps'] <= cfg['H_PAD']
                assert cfg['splits'] * cfg['blocks_per_split'] >= cfg['n_blocks'] == -(-1000 // cfg['BLOCK_N'])
                assert (cfg['splits'] - 1) * cfg['blocks_per_split'] < cfg['n_blocks']
                assert not fp32 or cfg['num_stages'] == 2
                # register caps (measured in bf16) leave fp32 alone and never go below what a tile needs
                assert 'maxnreg' not in cfg or (not fp32 and cfg['maxnreg'] >= 128)
