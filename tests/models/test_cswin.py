"""CSwin skeleton: FLatten / Agent variants, timm API, official checkpoints, any input size."""
import sys

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.models._manipulate import group_parameters

import linattn_vision  # noqa: F401  (registers the models)
from linattn_vision.checkpoint import CheckpointError, load_file
from linattn_vision.layers.pos_embed import resize_axis, resize_tokens_grid
from linattn_vision.models.cswin import AgentBranch, FocusedLinearBranch, LePEAttention, checkpoint_filter_fn
from model_checks import assert_grad_checkpointing_matches, create_from_official, meta_param_count, train_step
from official_layout import save_official_checkpoint  # tests/official_layout.py

# counted from the official model definitions (flatten_cswin.py / agent_cswin.py with the released configs);
# published: FLatten-CSwin-T/S/B 21.2M / 35.5M / 74.9M (paper), Agent-CSwin-T/S/B 21M / 33M / 73M (README)
PARAMS = {
    'flatten_cswin_t': 21_201_768,
    'flatten_cswin_s': 35_451_752,
    'flatten_cswin_b': 74_867_032,
    'flatten_cswin_b_384': 78_369_112,
    'agent_cswin_t': 20_458_672,
    'agent_cswin_s': 32_814_100,
    'agent_cswin_b': 73_249_696,
    'agent_cswin_b_384': 73_328_416,
}
PUBLISHED_M = {'flatten_cswin_t': 21.2, 'flatten_cswin_s': 35.5, 'flatten_cswin_b': 74.9,
               'agent_cswin_t': 21, 'agent_cswin_s': 33, 'agent_cswin_b': 73, 'agent_cswin_b_384': 73}

# a reduced configuration of the same skeleton for the checkpoint tests (fast on CPU)
SMALL = dict(depth=(1, 1, 1, 1))


@pytest.mark.parametrize('name', sorted(PARAMS))
def test_variant_param_count(name):
    n = meta_param_count(name)
    assert n == PARAMS[name]
    if name in PUBLISHED_M:
        assert abs(n / 1e6 - PUBLISHED_M[name]) < 0.55


def test_variant_configs():
    with torch.device('meta'):
        flatten = timm.create_model('flatten_cswin_t')
        agent = timm.create_model('agent_cswin_s')
    # stages 1-2: one global branch of the linear attention; stage 3: two stripe branches; stage 4: one window
    assert isinstance(flatten.stage1[0].attns[0], FocusedLinearBranch) and len(flatten.stage1[0].attns) == 1
    assert flatten.stage1[0].attns[0].positional_encoding.shape == (1, 56 * 56, 64)
    assert flatten.stage2[0].attns[0].positional_encoding.shape == (1, 28 * 28, 128)
    assert [a.orientation for a in flatten.stage3[0].attns] == ['vertical', 'horizontal']
    assert [a.orientation for a in flatten.stage4[0].attns] == [None]
    assert [len(getattr(agent, f'stage{i}')) for i in range(1, 5)] == [3, 6, 29, 2]
    assert isinstance(agent.stage2[0].attns[0], AgentBranch)
    assert agent.stage1[0].attns[0].agent_num == 9 and agent.stage2[0].attns[0].agent_num == 16
    assert agent.stage1[0].attns[0].ah_bias.shape == (1, 2, 9, 56, 1)


@pytest.mark.parametrize('name,param', [('flatten_cswin_t', 'positional_encoding'), ('agent_cswin_t', 'an_bias')])
@pytest.mark.parametrize('size', [(224, 224), (96, 160)])
def test_forward_backward(name, param, size):
    model = timm.create_model(name, drop_path_rate=0.)
    out = train_step(model, torch.randn(1, 3, *size))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()
    grads = [p.grad for n, p in model.named_parameters() if n.endswith(param)]
    assert grads and all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    # the stripe stages and the head learn too
    assert model.stage3[0].attns[1].get_v.weight.grad.abs().sum() > 0
    assert model.head.weight.grad.abs().sum() > 0


@pytest.mark.parametrize('name', ['flatten_cswin_t', 'agent_cswin_t'])
def test_features_only(name):
    model = timm.create_model(name, features_only=True, **SMALL).eval()
    assert model.feature_info.channels() == [64, 128, 256, 512]
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 100, 150))
    assert [tuple(f.shape) for f in feats] == [(1, 64, 25, 37), (1, 128, 13, 19), (1, 256, 7, 10), (1, 512, 4, 5)]
    picked = timm.create_model(name, features_only=True, out_indices=(1, 3), **SMALL)
    assert picked.feature_info.channels() == [128, 512]


def test_forward_intermediates_and_prune():
    model = timm.create_model('agent_cswin_t', **SMALL).eval()
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x, norm=True)
        assert torch.allclose(final, model.forward_features(x))
        assert [tuple(t.shape) for t in inter] == [(1, 64, 24, 32), (1, 128, 12, 16), (1, 256, 6, 8), (1, 512, 3, 4)]
        # the last intermediate is the normed final map
        assert torch.allclose(inter[-1].flatten(2).transpose(1, 2), final, atol=1e-6)
        nlc = model.forward_intermediates(x, indices=[1], output_fmt='NLC', intermediates_only=True)
        assert torch.allclose(nlc[0].transpose(1, 2).reshape(1, 128, 12, 16), inter[1])
        kept = model.prune_intermediate_layers(indices=(0, 1))
        assert kept == [0, 1] and not hasattr(model, 'stage3') and model.num_classes == 0
        pruned = model.forward_intermediates(x, intermediates_only=True)
    assert [torch.equal(a, b) for a, b in zip(pruned, inter[:2])] == [True, True]


def test_timm_api():
    model = timm.create_model('flatten_cswin_t', **SMALL).eval()
    groups = group_parameters(model, model.group_matcher())
    names = [n for _, ns in sorted(groups.items()) for n in ns]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    # merge i comes after stage i and before stage i + 1
    order = [ns[0].split('.')[0] for _, ns in sorted(groups.items())]
    assert order.index('merge1') > order.index('stage1') and order.index('merge1') < order.index('stage2')
    assert model.no_weight_decay() == set()  # the official models decay every positional parameter
    model.reset_classifier(10)
    assert model.get_classifier().out_features == 10
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        model.reset_classifier(0, '')
        assert model(x).shape == (1, 2 * 2, 512)  # unpooled final-stage tokens
        model.reset_classifier(0, 'avg')
        assert torch.allclose(model(x), model.forward_features(x).mean(1))


def test_grad_checkpointing_matches():
    model = timm.create_model('agent_cswin_t', drop_path_rate=0., **SMALL)
    assert_grad_checkpointing_matches(model, torch.randn(1, 3, 64, 96))


def test_too_small_input_names_model_and_size():
    model = timm.create_model('flatten_cswin_t', **SMALL)
    with pytest.raises(ValueError, match=r'flatten_cswin_t .*at least 4x4.*got 3x64'):
        model(torch.randn(1, 3, 3, 64))


# ------------------------------------------------------------------------------------ stripe attention
def _stripe_oracle(m, q, k, v, hw):
    """LePE stripe attention in float64 without partitioning: each token attends to the real tokens of its own
    stripe (a mask over the full sequence); LePE is a conv over each stripe cut out of the map."""
    B, N, C = q.shape
    H, W = hw
    s = m.split_size
    rows = torch.arange(H).repeat_interleave(W)
    cols = torch.arange(W).repeat(H)
    stripe = cols // s if m.orientation == 'vertical' else rows // s
    same = stripe[:, None] == stripe[None, :]
    h, d = m.num_heads, C // m.num_heads
    qh, kh, vh = (t.reshape(B, N, h, d).transpose(1, 2) for t in (q, k, v))
    logits = (qh @ kh.transpose(-2, -1)) * d ** -0.5
    out = logits.masked_fill(~same, float('-inf')).softmax(-1) @ vh
    out = out.transpose(1, 2).reshape(B, N, C)
    vmap = v.transpose(1, 2).reshape(B, C, H, W)
    lepe = torch.zeros_like(vmap)
    for i in range(-(-(W if m.orientation == 'vertical' else H) // s)):
        sl = (slice(None), slice(None), slice(None), slice(i * s, (i + 1) * s)) if m.orientation == 'vertical' \
            else (slice(None), slice(None), slice(i * s, (i + 1) * s), slice(None))
        lepe[sl] = F.conv2d(vmap[sl], m.get_v.weight, m.get_v.bias, padding=1, groups=C)
    return out + lepe.flatten(2).transpose(1, 2)


@pytest.mark.parametrize('orientation', ['vertical', 'horizontal'])
@pytest.mark.parametrize('hw', [(14, 14), (9, 11)])  # 9x11: the last stripe is padded and masked
def test_lepe_stripes_match_masked_attention(orientation, hw):
    m = LePEAttention(32, 2, split_size=7, orientation=orientation).double()
    with torch.no_grad():
        m.get_v.weight.normal_()
    q, k, v = (torch.randn(2, hw[0] * hw[1], 32, dtype=torch.float64) for _ in range(3))
    torch.testing.assert_close(m(q, k, v, hw), _stripe_oracle(m, q, k, v, hw))


def test_flatten_branch_matches_official_formula():
    """Official CSwin FocusedLinearAttention (idx -1) in plain float64 steps."""
    torch.manual_seed(1)
    m = FocusedLinearBranch(64, 2, (6, 5), focusing_factor=3, kernel_size=5).double()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.5)
    B, H, W, C, h = 2, 6, 5, 64, 2
    q, k, v = (torch.randn(B, H * W, C, dtype=torch.float64) for _ in range(3))
    lepe = F.conv2d(v.transpose(1, 2).reshape(B, C, H, W), m.get_v.weight, m.get_v.bias, padding=1, groups=C)
    lepe = lepe.reshape(B, C, -1).transpose(1, 2)
    kk = k + m.positional_encoding
    scale = F.softplus(m.scale)

    def phi(t):
        t = (F.relu(t) + 1e-6) / scale
        n = t.norm(dim=-1, keepdim=True)
        t = t ** 3
        return t / t.norm(dim=-1, keepdim=True) * n

    qf, kf = phi(q), phi(kk)
    qf, kf, vh = (t.reshape(B, H * W, h, -1).permute(0, 2, 1, 3) for t in (qf, kf, v))
    L = H * W
    z = 1 / (qf @ kf.mean(dim=-2, keepdim=True).transpose(-2, -1) + 1e-6)
    x = qf @ ((kf.transpose(-2, -1) * L ** -0.5) @ (vh * L ** -0.5)) * z
    x = x.transpose(1, 2).reshape(B, L, C)
    dwc = F.conv2d(vh.reshape(B * h, H, W, -1).permute(0, 3, 1, 2), m.dwc.weight, m.dwc.bias, padding=2,
                   groups=C // h)
    expected = x + dwc.reshape(B, C, L).permute(0, 2, 1) + lepe
    torch.testing.assert_close(m(q, k, v, (H, W)), expected)


def test_agent_branch_matches_official_formula():
    """Official CSwin AgentAttention (idx -1: one window over the map) in plain float64 steps, at its default grid
    and at another grid with the row / column biases resized linearly."""
    torch.manual_seed(2)
    m = AgentBranch(32, 2, (6, 8), agent_num=9).double()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.5)
    B, C, h, a = 2, 32, 2, 9
    for H, W in [(6, 8), (5, 7)]:
        q, k, v = (torch.randn(B, H * W, C, dtype=torch.float64) for _ in range(3))
        lepe = F.conv2d(v.transpose(1, 2).reshape(B, C, H, W), m.get_v.weight, m.get_v.bias, padding=1, groups=C)
        lepe = lepe.reshape(B, C, -1).transpose(1, 2)
        agent = F.adaptive_avg_pool2d(q.reshape(B, H, W, C).permute(0, 3, 1, 2), (3, 3)).reshape(B, C, -1)
        agent = agent.permute(0, 2, 1).reshape(B, a, h, -1).transpose(1, 2)
        qh, kh, vh = (t.reshape(B, H * W, h, -1).transpose(1, 2) for t in (q, k, v))
        ah, aw = resize_axis(m.ah_bias, 3, H), resize_axis(m.aw_bias, 4, W)
        ha, wa = resize_axis(m.ha_bias, 2, H), resize_axis(m.wa_bias, 3, W)
        b1 = F.interpolate(m.an_bias, size=(H, W), mode='bilinear').reshape(1, h, a, -1)
        b1 = b1 + (ah + aw).reshape(1, h, a, -1)
        agent_v = ((agent * m.scale) @ kh.transpose(-2, -1) + b1).softmax(-1) @ vh
        b2 = F.interpolate(m.na_bias, size=(H, W), mode='bilinear').reshape(1, h, a, -1).permute(0, 1, 3, 2)
        b2 = b2 + (ha + wa).reshape(1, h, -1, a)
        x = ((qh * m.scale) @ agent.transpose(-2, -1) + b2).softmax(-1) @ agent_v
        expected = x.transpose(1, 2).reshape(B, H * W, C) + lepe
        torch.testing.assert_close(m(q, k, v, (H, W)), expected)


# ------------------------------------------------------------------------------------ official checkpoints
@pytest.mark.parametrize('name', ['flatten_cswin_t', 'agent_cswin_t'])
def test_official_checkpoint_loads_strictly_and_reproduces(tmp_path, name):
    src = timm.create_model(name, **SMALL).eval()
    path = tmp_path / 'official.pth'
    save_official_checkpoint(path, src.state_dict())
    assert 'yacs' not in sys.modules
    dst = create_from_official(name, path, **SMALL).eval()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(dst(x), src(x))


def test_ema_weights_preferred(tmp_path):
    src = timm.create_model('flatten_cswin_t', **SMALL).eval()
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in src.state_dict().items()}
    path = tmp_path / 'official_ema.pth'
    save_official_checkpoint(path, src.state_dict(), state_dict_ema=ema)
    dst = create_from_official('flatten_cswin_t', path, **SMALL)
    assert torch.equal(dst.stage1[0].attns[0].positional_encoding, ema['stage1.0.attns.0.positional_encoding'])
    # the filter alone (on the whole release dict) makes the same choice
    loaded = load_file(path)  # the whole release dict, read safely
    out = checkpoint_filter_fn(loaded, dst)
    assert torch.equal(out['norm.weight'], ema['norm.weight'])


@pytest.mark.parametrize('name', ['flatten_cswin_t', 'agent_cswin_t'])
def test_resolution_change_at_load(tmp_path, name):
    """224 weights into a 256 model: its positional parameters are the 224 ones resized, and it computes what the
    224 model computes on a 256 input."""
    src = timm.create_model(name, **SMALL).eval()
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    path = tmp_path / 'official.pth'
    save_official_checkpoint(path, src.state_dict())
    dst = create_from_official(name, path, img_size=256, **SMALL).eval()
    a, b = src.stage1[0].attns[0], dst.stage1[0].attns[0]
    if name.startswith('flatten'):
        assert b.positional_encoding.shape == (1, 64 * 64, 64)
        torch.testing.assert_close(b.positional_encoding, resize_tokens_grid(a.positional_encoding, 56, 64))
    else:
        assert b.ah_bias.shape == (1, 2, 9, 64, 1) and b.wa_bias.shape == (1, 2, 1, 64, 9)
        torch.testing.assert_close(b.ah_bias, resize_axis(a.ah_bias, 3, 64))
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x), atol=1e-4, rtol=1e-4)


def test_wrong_keys_name_the_keys(tmp_path):
    model = timm.create_model('flatten_cswin_t', **SMALL)
    sd = model.state_dict()
    sd['stage2.0.attns.0.pos_enc'] = sd.pop('stage2.0.attns.0.positional_encoding')
    with pytest.raises(CheckpointError, match=r'missing keys: stage2\.0\.attns\.0\.positional_encoding.*'
                                              r'unexpected keys: stage2\.0\.attns\.0\.pos_enc'):
        checkpoint_filter_fn(sd, model)
    sd = model.state_dict()
    sd['stage3.0.qkv.weight'] = sd['stage3.0.qkv.weight'][:10]
    path = tmp_path / 'bad.pth'
    save_official_checkpoint(path, sd)
    with pytest.raises(CheckpointError, match=r'shape mismatch: stage3\.0\.qkv\.weight'):
        create_from_official('flatten_cswin_t', path, **SMALL)
