"""Agent attention (op and module) against a float64 evaluation of the formula of the official modules."""
import copy

import pytest
import torch
import torch.nn.functional as F

from linattn_vision.layers import AgentAttention, AgentCore
from linattn_vision.ops import agent_attention
from linattn_vision.ops.agent import op as agent_op


def official_agent_forward(m, x, hw, kv_biases_at=None):
    """Official agent_swin / agent_pvt / agent_deit AgentAttention.forward, step by step in plain matmuls.

    ``kv_biases_at``: (ah, aw, ha, wa) already on the live grid (default: the parameters as they are).
    """
    b, n, c = x.shape
    H, W = hw
    P = m.num_prefix_tokens
    h, a = m.num_heads, m.agent_num
    d = c // h
    if m.split_qkv:
        q = F.linear(x, m.q.weight, m.q.bias)
        if m.sr_ratio > 1:
            x_ = F.conv2d(x.permute(0, 2, 1).reshape(b, c, H, W), m.sr.weight, m.sr.bias, stride=m.sr_ratio)
            kv_hw = x_.shape[-2:]
            x_ = F.layer_norm(x_.reshape(b, c, -1).permute(0, 2, 1), (c,), m.norm.weight, m.norm.bias, m.norm.eps)
        else:
            x_, kv_hw = x, (H, W)
        k, v = F.linear(x_, m.kv.weight, m.kv.bias).reshape(b, -1, 2, c).permute(2, 0, 1, 3)
    else:
        q, k, v = F.linear(x, m.qkv.weight, m.qkv.bias).reshape(b, n, 3, c).permute(2, 0, 1, 3)
        kv_hw = (H, W)
    p = int(a ** 0.5)
    agent = F.adaptive_avg_pool2d(q[:, P:].reshape(b, H, W, c).permute(0, 3, 1, 2), (p, p))
    agent = agent.reshape(b, c, -1).permute(0, 2, 1).reshape(b, a, h, d).permute(0, 2, 1, 3)
    q, k, v = (t.reshape(b, -1, h, d).permute(0, 2, 1, 3) for t in (q, k, v))
    ah, aw, ha, wa = kv_biases_at or (m.ah_bias, m.aw_bias, m.ha_bias, m.wa_bias)
    pb = F.interpolate(m.an_bias, size=tuple(kv_hw), mode='bilinear').reshape(1, h, a, -1).repeat(b, 1, 1, 1)
    pb = pb + (ah + aw).reshape(1, h, a, -1).repeat(b, 1, 1, 1)
    if P:
        pb = torch.cat([m.ac_bias.repeat(b, 1, 1, 1), pb], dim=-1)
    agent_v = ((agent * m.scale) @ k.transpose(-2, -1) + pb).softmax(dim=-1) @ v
    ab = F.interpolate(m.na_bias, size=(H, W), mode='bilinear').reshape(1, h, a, -1).permute(0, 1, 3, 2)
    ab = ab.repeat(b, 1, 1, 1) + (ha + wa).reshape(1, h, -1, a).repeat(b, 1, 1, 1)
    if P:
        ab = torch.cat([m.ca_bias.repeat(b, 1, 1, 1), ab], dim=-2)
    out = (((q * m.scale) @ agent.transpose(-2, -1) + ab).softmax(dim=-1) @ agent_v).transpose(1, 2).reshape(b, n, c)
    v_ = v[:, :, P:].transpose(1, 2).reshape(b, *kv_hw, c).permute(0, 3, 1, 2)
    if m.sr_ratio > 1:
        v_ = F.interpolate(v_, size=(H, W), mode='bilinear')
    conv = F.conv2d(v_, m.dwc.weight, m.dwc.bias, padding=1, groups=c).permute(0, 2, 3, 1).reshape(b, H * W, c)
    out = torch.cat([out[:, :P], out[:, P:] + conv], dim=1)
    return F.linear(out, m.proj.weight, m.proj.bias)


def _randomize(m):
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.5)
    return m


@pytest.mark.parametrize('by_matmul', [False, True], ids=['sdpa', 'matmul_aggregation'])
def test_op_matches_float64_formula(by_matmul, monkeypatch):
    """Both ways of computing the aggregation step (SDPA; matmul-softmax-matmul, taken on CUDA when SDPA would
    run too few programs), forward and gradients."""
    monkeypatch.setattr(agent_op, '_aggregation_by_matmul', lambda agent, dropout_p: by_matmul)
    B, h, N, Nk, n, d = 2, 3, 20, 12, 4, 8
    inputs = [torch.randn(B, h, s, d, requires_grad=True) for s in (N, Nk, Nk, n)]
    inputs += [torch.randn(1, h, n, Nk), torch.randn(1, h, N, n)]
    out = agent_attention(*inputs, scale=d ** -0.5)
    grads = torch.autograd.grad(out.square().sum(), inputs[:4])
    q, k, v, agent, b1, b2 = (t.detach().double().requires_grad_() for t in inputs)
    agent_v = (agent @ k.transpose(-2, -1) * d ** -0.5 + b1).softmax(-1) @ v
    ref = (q @ agent.transpose(-2, -1) * d ** -0.5 + b2).softmax(-1) @ agent_v
    ref_grads = torch.autograd.grad(ref.square().sum(), [q, k, v, agent])
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g.double(), r, rtol=1e-4, atol=1e-5)


def test_aggregation_path_choice():
    """Matmul aggregation only on CUDA, without dropout, when SDPA would get fewer than MIN_SDPA_PROGRAMS programs
    (B * heads * ceil(agents / 64))."""
    meta = torch.empty(1, 3, 49, 32, device='meta')
    assert not agent_op._aggregation_by_matmul(meta, 0.0)  # not CUDA
    cuda_like = type('T', (), {'shape': (1, 3, 49, 32), 'is_cuda': True})()
    assert agent_op._aggregation_by_matmul(cuda_like, 0.0)
    assert not agent_op._aggregation_by_matmul(cuda_like, 0.1)
    cuda_like.shape = (22, 3, 49, 32)  # 66 programs
    assert not agent_op._aggregation_by_matmul(cuda_like, 0.0)


@pytest.mark.parametrize('kwargs, hw, P', [
    (dict(), (6, 6), 0),                                      # Swin: full-map window
    (dict(split_qkv=True, sr_ratio=2), (8, 8), 0),            # PVT: spatial reduction of k/v
    (dict(split_qkv=True), (6, 6), 0),                        # PVT: no reduction
    (dict(num_prefix_tokens=1), (6, 6), 1),                   # DeiT: class token
])
def test_module_matches_official_formula(kwargs, hw, P):
    m = _randomize(AgentAttention(24, 3, hw, agent_num=9, **kwargs)).double().eval()
    x = torch.randn(2, P + hw[0] * hw[1], 24, dtype=torch.float64)
    torch.testing.assert_close(m(x, hw), official_agent_forward(m, x, hw), rtol=1e-9, atol=1e-9)


def test_float32_module_close_to_float64():
    m = _randomize(AgentAttention(32, 2, (8, 8), agent_num=16)).eval()
    x = torch.randn(2, 64, 32)
    ref = official_agent_forward(m.double(), x.double(), (8, 8))
    torch.testing.assert_close(m.float()(x, (8, 8)).double(), ref, rtol=1e-4, atol=1e-4)


def test_parameter_names_and_shapes_are_official():
    swin = {k: tuple(v.shape) for k, v in AgentAttention(96, 3, (56, 56), agent_num=9).state_dict().items()}
    assert swin == {
        'an_bias': (3, 9, 7, 7), 'na_bias': (3, 9, 7, 7), 'ah_bias': (1, 3, 9, 56, 1), 'aw_bias': (1, 3, 9, 1, 56),
        'ha_bias': (1, 3, 56, 1, 9), 'wa_bias': (1, 3, 1, 56, 9), 'qkv.weight': (288, 96), 'qkv.bias': (288,),
        'proj.weight': (96, 96), 'proj.bias': (96,), 'dwc.weight': (96, 1, 3, 3), 'dwc.bias': (96,)}
    pvt = AgentAttention(64, 1, (56, 56), agent_num=9, split_qkv=True, sr_ratio=8).state_dict()
    assert tuple(pvt['ah_bias'].shape) == (1, 1, 9, 7, 1) and tuple(pvt['ha_bias'].shape) == (1, 1, 56, 1, 9)
    assert {'q.weight', 'kv.weight', 'sr.weight', 'norm.weight'} <= set(pvt)
    deit = AgentAttention(192, 3, (14, 14), agent_num=49, num_prefix_tokens=1).state_dict()
    assert tuple(deit['ac_bias'].shape) == (1, 3, 49, 1) and tuple(deit['ca_bias'].shape) == (1, 3, 1, 49)


@pytest.mark.parametrize('kwargs, P', [(dict(), 0), (dict(num_prefix_tokens=1), 1)])
def test_biases_follow_a_non_square_live_grid(kwargs, P):
    m = _randomize(AgentAttention(16, 2, (6, 6), agent_num=4, **kwargs)).double().eval()
    H, W = 5, 9
    x = torch.randn(1, P + H * W, 16, dtype=torch.float64)

    def lin(t, dim, size):  # 1-D linear resize, align_corners=False
        t = t.movedim(dim, -1)
        out = F.interpolate(t.reshape(1, -1, t.shape[-1]), size=size, mode='linear', align_corners=False)
        return out.reshape(*t.shape[:-1], size).movedim(-1, dim)

    biases = (lin(m.ah_bias, 3, H), lin(m.aw_bias, 4, W), lin(m.ha_bias, 2, H), lin(m.wa_bias, 3, W))
    torch.testing.assert_close(m(x, (H, W)), official_agent_forward(m, x, (H, W), biases), rtol=1e-9, atol=1e-9)


def test_biases_broadcast_over_batch_not_copied():
    m = AgentAttention(16, 2, (4, 4), agent_num=4)
    b1, b2 = m.position_biases((4, 4))
    assert b1.shape == (1, 2, 4, 16) and b2.shape == (1, 2, 16, 4)


def test_biases_cached_in_the_query_dtype_with_aligned_rows():
    """Inference under bf16 keeps the biases in bf16 (half the cache of fp32), with unit last stride and rows padded
    to 16 elements (no layout copy per call: SDPA and the kernels take them as they are), with the fp32 build's
    values rounded once; the fp32 ones are cached apart."""
    m = _randomize(AgentAttention(16, 2, (4, 4), agent_num=4)).eval()
    with torch.no_grad():
        full = m.position_biases((4, 6))
        half = m.position_biases((4, 6), dtype=torch.bfloat16)
        assert m.position_biases((4, 6), dtype=torch.bfloat16) is half and m.position_biases((4, 6)) is full
    for f, h in zip(full, half):
        assert h.dtype == torch.bfloat16
        for t in (f, h):
            assert t.stride(-1) == 1 and t.stride(-2) % 16 == 0 and t.stride(-3) == t.shape[-2] * t.stride(-2)
        assert torch.equal(h, f.to(torch.bfloat16))


def test_bias_cache_reused_without_grad_and_rebuilt_with_grad():
    m = _randomize(AgentAttention(16, 2, (4, 4), agent_num=4)).eval()
    with torch.no_grad():
        first = m.position_biases((4, 6))
        assert m.position_biases((4, 6)) is first
    with torch.no_grad():
        m.an_bias.add_(1.0)  # in-place change invalidates the cache
        assert m.position_biases((4, 6)) is not first
    m.train()
    for _ in range(2):  # a cached graph would fail on the second backward
        m.zero_grad()
        m(torch.randn(2, 24, 16), (4, 6)).sum().backward()
        assert all(p.grad is not None for p in (m.an_bias, m.ah_bias, m.wa_bias))


def test_core_attend_for_models_with_own_qkv():
    core = _randomize(AgentCore(16, 2, (2, 8), agent_num=4)).double()
    assert 'qkv.weight' not in core.state_dict() and 'dwc.weight' not in core.state_dict()
    q, k, v = (torch.randn(3, 16, 16, dtype=torch.float64) for _ in range(3))
    assert core.attend(q, k, v, (2, 8)).shape == (3, 16, 16)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match='agent_num must be a square'):
        AgentAttention(16, 2, (4, 4), agent_num=10)
    with pytest.raises(ValueError, match='needs split_qkv'):
        AgentAttention(16, 2, (4, 4), agent_num=4, sr_ratio=2)
    with pytest.raises(ValueError, match='not 0 prefix tokens \\+ the 4x5 grid'):
        AgentAttention(16, 2, (4, 4), agent_num=4)(torch.randn(1, 16, 16), (4, 5))


def _compiled_with_graph_ops(module):
    """torch.compile(module) with a backend that records the ops of each graph dynamo captures."""
    graphs = []

    def backend(gm, example_inputs):
        graphs.append({str(n.target) for n in gm.graph.nodes if n.op in ('call_function', 'call_method')})
        return gm.forward
    torch._dynamo.reset()
    return torch.compile(module, backend=backend), graphs


def _training_module_and_float64_step():
    """A small training-mode AgentAttention, its input, and its float64 eager output and parameter gradients."""
    torch.manual_seed(0)
    m = _randomize(AgentAttention(16, 2, (4, 4), agent_num=4)).train()
    x = torch.randn(2, 16, 16)
    m64 = copy.deepcopy(m).double()
    out = m64(x.double(), (4, 4))
    return m, x, out, torch.autograd.grad(out.square().sum(), list(m64.parameters()))


def _assert_step_matches(m, out_c, out, grads):
    """out_c (a compiled call of m) and m's gradients of it against the float64 eager step."""
    grads_c = torch.autograd.grad(out_c.square().sum(), list(m.parameters()))
    torch.testing.assert_close(out_c.double(), out, rtol=1e-5, atol=1e-5)
    for g_c, g in zip(grads_c, grads):
        torch.testing.assert_close(g_c.double(), g, rtol=1e-4, atol=1e-5 * g.abs().max().item())


def test_compiled_training_runs_the_biased_steps_as_matmuls():
    """Under torch.compile, a step that trains the biases computes both softmax steps as matmul, softmax, matmul
    (inductor's bias layouts broke SDPA's memory-efficient backward on CUDA); the outputs and every gradient are
    float64 eager's. Without gradients (inference) the compiled steps stay on SDPA."""
    m, x, out, grads = _training_module_and_float64_step()

    compiled, graphs = _compiled_with_graph_ops(m)
    out_c = compiled(x, (4, 4))
    ops = set().union(*graphs)
    assert not any('scaled_dot_product_attention' in op or 'dense_copy' in op for op in ops)
    assert any('matmul' in op for op in ops) and 'softmax' in ops
    _assert_step_matches(m, out_c, out, grads)

    compiled, graphs = _compiled_with_graph_ops(m.eval())
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, (4, 4)), m(x, (4, 4)), rtol=1e-5, atol=1e-5)
    assert any('scaled_dot_product_attention' in op for op in set().union(*graphs))


def test_compiled_biases_are_opaque_dense_copies(monkeypatch):
    """With compiled bias training on SDPA, the biases reach attention through the opaque linattn::dense_copy
    (inductor keeps the contiguous layout it returns); through AOT autograd the outputs and every gradient are
    float64 eager's."""
    monkeypatch.setattr(agent_op.COMPILED_SDPA, 'on', True)
    m, x, out, grads = _training_module_and_float64_step()

    recorded, graphs = _compiled_with_graph_ops(m)
    recorded(x, (4, 4))
    ops = set().union(*graphs)
    assert sum('dense_copy' in op for op in ops) == 1 and any('scaled_dot_product_attention' in op for op in ops)
    torch._dynamo.reset()
    compiled = torch.compile(m, backend='aot_eager')
    out_c = compiled(x, (4, 4))
    _assert_step_matches(m, out_c, out, grads)


@pytest.mark.parametrize('agents', [16, 49, 196])
def test_dense_copy_rows_are_aligned_for_sdpa(agents):
    """dense_copy's rows are padded to BIAS_ROW_ALIGNMENT elements (SDPA would otherwise pad the bias itself, in a
    copy whose layout inductor picks: the 49-agent failure on the GPU); its fake kernel gives the same strides."""
    x = torch.randn(1, 3, 10, agents)
    y = agent_op._dense_copy(x, torch.bfloat16)
    assert y.shape == x.shape and y.stride(-1) == 1 and y.stride(-2) % agent_op.BIAS_ROW_ALIGNMENT == 0
    assert y.stride(-2) < agents + agent_op.BIAS_ROW_ALIGNMENT
    assert torch.equal(y, x.bfloat16())
    torch.library.opcheck(agent_op._dense_copy, (x.requires_grad_(), torch.float32))


def test_exported_module_copies_biases_with_plain_ops(monkeypatch):
    """torch.export keeps the biases' copy as plain aten ops (no linattn op another runtime would not know), also
    with compiled bias training on SDPA."""
    monkeypatch.setattr(agent_op.COMPILED_SDPA, 'on', True)
    class Grid4x4(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = AgentAttention(16, 2, (4, 4), agent_num=4).eval()

        def forward(self, x):
            return self.attn(x, (4, 4))
    x = torch.randn(2, 16, 16)
    module = Grid4x4()
    exported = torch.export.export(module, (x,))
    assert not any('linattn' in str(n.target) for n in exported.graph.nodes)
    torch.testing.assert_close(exported.module()(x), module(x))


def test_matmul_steps_drop_attention_weights_like_sdpa():
    """The matmul steps apply dropout to the attention weights (rows then no longer sum to one)."""
    torch.manual_seed(0)
    q, k = torch.randn(2, 1, 8, 4), torch.randn(2, 1, 6, 4)
    ones = torch.ones(2, 1, 6, 1)
    assert torch.allclose(agent_op._attend(q, k, ones, None, 0.5), torch.ones(2, 1, 8, 1))
    dropped = agent_op._attend(q, k, ones, None, 0.5, dropout_p=0.5)
    assert not torch.allclose(dropped, torch.ones(2, 1, 8, 1))
    torch.testing.assert_close(dropped.mean(), torch.tensor(1.0), atol=0.35, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('by_matmul', [True, False], ids=['matmul', 'sdpa'])
@pytest.mark.parametrize('dim, heads, grid, agents', [(192, 6, 28, 16), (384, 12, 14, 49)],
                         ids=['stage2_16agents', 'stage3_49agents'])
def test_gpu_inductor_compiled_training_matches_eager(by_matmul, dim, heads, grid, agents, monkeypatch):
    """Inductor on CUDA, bf16 autocast, official Agent-Swin shapes: compiled Agent-Swin-T training failed with SDPA's
    '(*bias): last dimension must be contiguous' at stage 2 before the biases came through dense_bias, and with the
    switch at stage 3 (49 agents: a bias row SDPA padded itself) before dense_copy padded its rows. The compiled
    step's outputs and gradients are eager's, with the steps as matmuls (the default) and on SDPA
    (LINATTN_AGENT_COMPILED_SDPA=1). On SDPA both steps take it, as in the whole model at batch 64: at this batch the
    aggregation step would be matmuls (too few SDPA programs), and so it was when this test passed on an H200 while the
    whole model failed there."""
    monkeypatch.setattr(agent_op.COMPILED_SDPA, 'on', not by_matmul)
    monkeypatch.setattr(agent_op, 'MIN_SDPA_PROGRAMS', 0)
    torch.manual_seed(0)
    m = AgentAttention(dim, heads, (grid, grid), agent_num=agents).cuda().train()
    x = torch.randn(4, grid * grid, dim, device='cuda')

    def step(module):
        with torch.autocast('cuda', dtype=torch.bfloat16):
            out = module(x, (grid, grid))
        return out.float(), torch.autograd.grad(out.float().square().mean(), list(m.parameters()))
    out, grads = step(m)
    torch._dynamo.reset()
    out_c, grads_c = step(torch.compile(m))
    assert out_c.isfinite().all() and all(g.isfinite().all() for g in grads_c)
    torch.testing.assert_close(out_c, out, rtol=3e-2, atol=3e-2)
    for g_c, g in zip(grads_c, grads):
        torch.testing.assert_close(g_c, g, rtol=5e-2, atol=5e-2 * g.abs().max().item())
