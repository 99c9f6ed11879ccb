"""DeiT skeleton: FLatten / Agent variants, timm API, official checkpoints, any input size."""
import sys

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed
from timm.models._manipulate import group_parameters

import linattn_vision  # noqa: F401  (registers the models)
from linattn_vision.checkpoint import CheckpointError
from linattn_vision.layers import AgentAttention
from linattn_vision.layers.pos_embed import resize_axis, resize_tokens_grid
from linattn_vision.models.deit import FocusedLinearPrefixAttention, SoftmaxAttention, checkpoint_filter_fn
from model_checks import assert_grad_checkpointing_matches, create_from_official, meta_param_count, train_step
from official_layout import save_official_checkpoint  # tests/official_layout.py

# counted from the official model definitions; published (Agent-Attention README): Agent-DeiT-T 6.0M,
# S 22.7M, S-448 23.1M, B 87.2M. FLatten-DeiT has no official model file: DeiT + focused linear attention in
# every block with a (1, 196, C) positional encoding, a 5x5 head-shared DWC and the focusing scale (paper: 6.1M).
PARAMS = {
    'flatten_deit_t': 6_191_272,
    'flatten_deit_s': 22_978_408,
    'flatten_deit_b': 88_403_176,
    'agent_deit_t': 6_015_640,
    'agent_deit_s': 22_647_112,
    'agent_deit_b': 87_204_904,
    'agent_deit_s_448': 23_070_472,
}
PUBLISHED_M = {'agent_deit_t': 6.0, 'agent_deit_s': 22.7, 'agent_deit_b': 87.2, 'agent_deit_s_448': 23.1,
               'flatten_deit_t': 6.1}

SMALL = dict(depth=2)  # a reduced depth of the same skeleton for the checkpoint tests (fast on CPU)


@pytest.mark.parametrize('name', sorted(PARAMS))
def test_variant_param_count(name):
    n = meta_param_count(name)
    assert n == PARAMS[name]
    assert abs(n / 1e6 - PUBLISHED_M.get(name, n / 1e6)) < 0.1


def test_variant_configs():
    with torch.device('meta'):
        base = timm.create_model('agent_deit_b')
        s448 = timm.create_model('agent_deit_s_448')
        flatten = timm.create_model('flatten_deit_t')
    # official agent_layer=4: agent attention (81 agents) in blocks 0-3, softmax attention after
    assert [type(b.attn) for b in base.blocks] == [AgentAttention] * 4 + [SoftmaxAttention] * 8
    assert base.blocks[0].attn.agent_num == 81 and base.blocks[0].attn.ac_bias.shape == (1, 12, 81, 1)
    assert s448.pos_embed.shape == (1, 28 * 28 + 1, 384) and s448.blocks[0].attn.ha_bias.shape == (1, 6, 28, 1, 49)
    assert all(isinstance(b.attn, FocusedLinearPrefixAttention) for b in flatten.blocks)
    assert flatten.blocks[0].attn.positional_encoding.shape == (1, 196, 192)
    assert flatten.blocks[0].attn.dwc.weight.shape == (64, 1, 5, 5)


@pytest.mark.parametrize('name,param', [('flatten_deit_t', 'positional_encoding'), ('agent_deit_t', 'ha_bias')])
@pytest.mark.parametrize('size', [(224, 224), (100, 150)])  # 100x150: padded to 112x160, a 7x10 grid
def test_forward_backward(name, param, size):
    model = timm.create_model(name, drop_path_rate=0.)
    out = train_step(model, torch.randn(1, 3, *size))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()
    grads = [p.grad for n, p in model.named_parameters() if n.endswith(param)]
    # the head reads the class token: the last block's patch queries (ha_bias) cannot reach the loss
    assert len(grads) == 12 and all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads[:-1])
    assert model.pos_embed.grad.abs().sum() > 0 and model.cls_token.grad.abs().sum() > 0


@pytest.mark.parametrize('name', ['flatten_deit_t', 'agent_deit_t'])
def test_features_only(name):
    model = timm.create_model(name, features_only=True, out_indices=(0, 1), **SMALL).eval()
    assert model.feature_info.channels() == [192, 192] and model.feature_info.reduction() == [16, 16]
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 100, 150))
    assert [tuple(f.shape) for f in feats] == [(1, 192, 7, 10)] * 2
    with torch.device('meta'):
        default = timm.create_model(name, features_only=True)  # timm ViT default: the last 3 blocks
    assert [i['module'] for i in default.feature_info.get_dicts()] == ['blocks.9', 'blocks.10', 'blocks.11']


def test_forward_intermediates_and_prune():
    model = timm.create_model('agent_deit_t', **SMALL).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x, return_prefix_tokens=True)
        assert torch.allclose(final, model.forward_features(x))
        (maps, cls), = inter[1:]
        assert maps.shape == (1, 192, 4, 6) and cls.shape == (1, 1, 192)
        # un-normed block output: final norm of it is the final features
        tokens = torch.cat([cls, maps.flatten(2).transpose(1, 2)], dim=1)
        assert torch.allclose(model.norm(tokens), final, atol=1e-6)
        kept = model.prune_intermediate_layers(indices=[0])
        assert kept == [0] and len(model.blocks) == 1 and model.num_classes == 0
        pruned = model.forward_intermediates(x, intermediates_only=True)
    assert torch.equal(pruned[0], inter[0][0])


def test_timm_api():
    model = timm.create_model('flatten_deit_t', **SMALL).eval()
    groups = group_parameters(model, model.group_matcher())
    assert sorted(n for ns in groups.values() for n in ns) == sorted(n for n, _ in model.named_parameters())
    assert model.no_weight_decay() == {'pos_embed', 'cls_token'}
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        model.reset_classifier(0, 'avg')
        assert torch.allclose(model(x), model.forward_features(x)[:, 1:].mean(1))
        model.reset_classifier(5, 'token')
        assert model(x).shape == (1, 5)


def test_grad_checkpointing_matches():
    model = timm.create_model('flatten_deit_t', drop_path_rate=0., **SMALL)
    assert_grad_checkpointing_matches(model, torch.randn(1, 3, 64, 80))


def test_too_small_input_names_model_and_size():
    model = timm.create_model('agent_deit_t', **SMALL)
    with pytest.raises(ValueError, match=r'agent_deit_t .*at least 16x16.*got 64x8'):
        model(torch.randn(1, 3, 64, 8))


def test_flatten_prefix_attention_matches_formula():
    """The class token is a query and a key/value of the focused linear attention; the positional encoding on k
    and the DWC on v cover the patch grid only. Plain float64 steps."""
    torch.manual_seed(1)
    m = FocusedLinearPrefixAttention(48, 3, (4, 5), num_prefix_tokens=1).double()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.5)
    B, H, W, C, h = 2, 4, 5, 48, 3
    N = 1 + H * W
    x = torch.randn(B, N, C, dtype=torch.float64)
    q, k, v = F.linear(x, m.qkv.weight, m.qkv.bias).reshape(B, N, 3, C).unbind(2)
    k = k + torch.cat([torch.zeros(1, 1, C, dtype=k.dtype), m.positional_encoding], dim=1)
    scale = F.softplus(m.scale)

    def phi(t):
        t = (F.relu(t) + 1e-6) / scale
        n = t.norm(dim=-1, keepdim=True)
        t = t ** 3
        return t / t.norm(dim=-1, keepdim=True) * n

    qf, kf, vh = (t.reshape(B, N, h, -1).transpose(1, 2) for t in (phi(q), phi(k), v))
    num = qf @ (kf.transpose(-2, -1) @ vh)
    den = qf @ kf.sum(dim=-2, keepdim=True).transpose(-2, -1) + 1e-6 * N
    out = (num / den).transpose(1, 2).reshape(B, N, C)
    grid_v = vh[:, :, 1:].reshape(B * h, H, W, -1).permute(0, 3, 1, 2)
    dwc = F.conv2d(grid_v, m.dwc.weight, m.dwc.bias, padding=2, groups=C // h).reshape(B, C, H * W).transpose(1, 2)
    out = torch.cat([out[:, :1], out[:, 1:] + dwc], dim=1)
    torch.testing.assert_close(m(x, (H, W)), F.linear(out, m.proj.weight, m.proj.bias))


# ------------------------------------------------------------------------------------ official checkpoints
@pytest.mark.parametrize('name', ['flatten_deit_t', 'agent_deit_t', 'agent_deit_b'])
def test_official_checkpoint_loads_strictly_and_reproduces(tmp_path, name):
    # agent_deit_b: 4 agent blocks then softmax ones, at a reduced width
    kwargs = dict(depth=5, embed_dim=96, num_heads=3) if name == 'agent_deit_b' else SMALL
    src = timm.create_model(name, **kwargs).eval()
    path = tmp_path / 'official.pth'
    save_official_checkpoint(path, src.state_dict())
    assert 'yacs' not in sys.modules
    dst = create_from_official(name, path, **kwargs).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(dst(x), src(x))


@pytest.mark.parametrize('name', ['flatten_deit_t', 'agent_deit_t'])
def test_resolution_change_at_load(tmp_path, name):
    """224 weights into a 256 model: pos_embed and the attention's grid parameters are the 224 ones resized, and
    the model computes what the 224 model computes on a 256 input."""
    src = timm.create_model(name, **SMALL).eval()
    path = tmp_path / 'official.pth'
    save_official_checkpoint(path, src.state_dict())
    dst = create_from_official(name, path, img_size=256, **SMALL).eval()
    assert dst.pos_embed.shape == (1, 257, 192)
    torch.testing.assert_close(dst.pos_embed, resample_abs_pos_embed(src.pos_embed, (16, 16), (14, 14), 1))
    a, b = src.blocks[1].attn, dst.blocks[1].attn
    if name.startswith('flatten'):
        torch.testing.assert_close(b.positional_encoding, resize_tokens_grid(a.positional_encoding, 14, 16))
    else:
        torch.testing.assert_close(b.aw_bias, resize_axis(a.aw_bias, 4, 16))
        assert torch.equal(b.ac_bias, a.ac_bias)
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x), atol=1e-4, rtol=1e-4)


def test_wrong_keys_name_the_keys(tmp_path):
    model = timm.create_model('agent_deit_t', **SMALL)
    sd = model.state_dict()
    sd['blocks.1.attn.agent_bias'] = sd.pop('blocks.1.attn.an_bias')
    with pytest.raises(CheckpointError, match=r'missing keys: blocks\.1\.attn\.an_bias.*'
                                              r'unexpected keys: blocks\.1\.attn\.agent_bias'):
        checkpoint_filter_fn(sd, model)
    sd = model.state_dict()
    sd['blocks.0.mlp.fc1.weight'] = sd['blocks.0.mlp.fc1.weight'][:, :7]
    path = tmp_path / 'bad.pth'
    save_official_checkpoint(path, sd)
    with pytest.raises(CheckpointError, match=r'shape mismatch: blocks\.0\.mlp\.fc1\.weight'):
        create_from_official('agent_deit_t', path, **SMALL)
