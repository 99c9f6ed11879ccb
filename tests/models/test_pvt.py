"""PVT v1 family: FLatten-PVT and Agent-PVT as timm models."""
import sys

import pytest
import timm
import torch

import linattn_vision  # noqa: F401  (registers the models)
from linattn_vision.checkpoint import CheckpointError
from linattn_vision.layers import resize_axis, resize_tokens_grid
from linattn_vision.models.pvt import checkpoint_filter_fn
from model_checks import (
    assert_grad_checkpointing_matches, create_from_official, draw_flatten_params, inference_gflops, meta_param_count,
    published_roundings,
)
from official_layout import save_official_checkpoint  # tests/official_layout.py

# exact counts of the official module structure; the papers / READMEs round them to 0.1M
# (FLatten-PVT-L 50.649M is quoted as 50.7M, i.e. via 50.65)
PARAMS = {
    'flatten_pvt_t': (12_150_504, 12.2),
    'flatten_pvt_s': (21_670_248, 21.7),
    'flatten_pvt_m': (37_242_216, 37.2),
    'flatten_pvt_l': (50_649_192, 50.7),
    'agent_pvt_t': (11_570_352, 11.6),
    'agent_pvt_s': (20_635_066, 20.6),
    'agent_pvt_m': (35_921_746, 35.9),
    'agent_pvt_l': (48_738_180, 48.7),
    'agent_pvt_m_256': (36_083_682, 36.1),
}
TINY = ['flatten_pvt_t', 'agent_pvt_t']


@pytest.fixture(scope='module')
def tiny_models():
    torch.manual_seed(0)
    models = {name: timm.create_model(name).eval() for name in TINY}
    draw_flatten_params(models['flatten_pvt_t'])
    return models


@pytest.mark.parametrize('name', sorted(PARAMS))
def test_param_count(name):
    count = meta_param_count(name)
    exact, quoted = PARAMS[name]
    assert count == exact
    assert quoted in published_roundings(count)


def test_flops_match_papers(tiny_models):
    """Multiply-accumulates of matmuls and convs at 224, the papers' FLOPs (both T models: 2.0G)."""
    for name in TINY:
        assert round(inference_gflops(tiny_models[name], torch.randn(1, 3, 224, 224)) / 2, 1) == 2.0, name

def test_pretrained_cfgs():
    for name in PARAMS:
        cfg = timm.models.get_pretrained_cfg(name)
        size = 256 if name.endswith('_256') else 224
        assert cfg.input_size == (3, size, size) and cfg.crop_pct == 0.875 and cfg.interpolation == 'bicubic'
        assert cfg.first_conv == 'patch_embed1.proj' and cfg.classifier == 'head' and cfg.min_input_size == (3, 32, 32)
    data_cfg = timm.data.resolve_data_config(model=timm.create_model('agent_pvt_t', pretrained=False))
    assert data_cfg['input_size'] == (3, 224, 224) and data_cfg['mean'] == timm.data.IMAGENET_DEFAULT_MEAN

def test_official_layout_keys(tiny_models):
    flatten_keys = set(tiny_models['flatten_pvt_t'].state_dict())
    agent_keys = set(tiny_models['agent_pvt_t'].state_dict())
    for key in ('patch_embed1.proj.weight', 'patch_embed1.norm.weight', 'pos_embed1', 'pos_embed4', 'norm.weight',
                'block1.0.attn.q.weight', 'block1.0.attn.kv.weight', 'block1.0.attn.proj.weight',
                'block1.0.attn.dwc.weight', 'block1.0.attn.scale', 'block1.0.attn.positional_encoding',
                'block4.1.mlp.fc2.bias', 'head.weight'):
        assert key in flatten_keys, key
    for key in ('block1.0.attn.an_bias', 'block1.0.attn.na_bias', 'block1.0.attn.ah_bias', 'block1.0.attn.aw_bias',
                'block1.0.attn.ha_bias', 'block1.0.attn.wa_bias', 'block3.1.attn.dwc.weight', 'pos_embed1'):
        assert key in agent_keys, key
    # no spatial reduction and no class token in either release; Agent-PVT has no final norm
    assert not any('.sr.' in k or 'cls_token' in k for k in flatten_keys | agent_keys)
    assert 'norm.weight' not in agent_keys
    sd = tiny_models['agent_pvt_t'].state_dict()
    assert sd['block1.0.attn.an_bias'].shape == (1, 9, 7, 7)
    assert sd['block3.0.attn.ha_bias'].shape == (1, 5, 14, 1, 49)
    assert sd['pos_embed4'].shape == (1, 49, 512)
    assert tiny_models['flatten_pvt_t'].state_dict()['block1.0.attn.dwc.weight'].shape == (64, 1, 5, 5)


@pytest.mark.parametrize('name', TINY)
@pytest.mark.parametrize('size', [(224, 224), (256, 320)])
def test_forward_backward(name, size):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10)
    out = model(torch.randn(1, 3, *size))
    assert out.shape == (1, 10) and torch.isfinite(out).all()
    out.square().sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    # the FLatten release keeps a final norm it never applies (see PyramidVisionTransformer)
    assert no_grad == (['norm.weight', 'norm.bias'] if name.startswith('flatten') else [])


@pytest.mark.parametrize('name', TINY)
def test_features_only(name, tiny_models):
    model = timm.create_model(name, features_only=True, out_indices=(0, 1, 2, 3)).eval()
    assert model.feature_info.channels() == [64, 128, 320, 512]
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    model.load_state_dict({f'model.{k}': v for k, v in tiny_models[name].state_dict().items()
                           if not k.startswith(('head', 'norm'))})
    x = torch.randn(1, 3, 100, 130)
    with torch.no_grad():
        feats = model(x)
        _, ref = tiny_models[name].forward_intermediates(x)
    assert [tuple(f.shape) for f in feats] == [(1, 64, 25, 32), (1, 128, 12, 16), (1, 320, 6, 8), (1, 512, 3, 4)]
    for f, r in zip(feats, ref):
        torch.testing.assert_close(f, r)

    two = timm.create_model(name, features_only=True, out_indices=(1, 2))
    assert two.feature_info.channels() == [128, 320]
    assert not hasattr(two.model, 'block4') and not hasattr(two.model, 'pos_embed4')
    assert [tuple(f.shape) for f in two(x)] == [(1, 128, 12, 16), (1, 320, 6, 8)]


def test_forward_intermediates_and_head(tiny_models):
    model = tiny_models['agent_pvt_t']
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x, indices=2)
        features = model.forward_features(x)
        logits = model(x)
        only = model.forward_intermediates(x, indices=[0], intermediates_only=True)
    assert len(inter) == 2 and inter[-1].shape == (1, 512, 2, 3)
    torch.testing.assert_close(final, features)
    torch.testing.assert_close(model.forward_head(features), logits)
    torch.testing.assert_close(model.forward_head(features, pre_logits=True), features.mean((-2, -1)))
    assert len(only) == 1 and only[0].shape == (1, 64, 16, 24)


def test_timm_api():
    model = timm.create_model('agent_pvt_t')
    model.reset_classifier(7)
    assert model.get_classifier().out_features == 7
    model.reset_classifier(0)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 512)

    # the official recipe decays every weight of more than one dim, position embeddings and agent biases included
    assert model.no_weight_decay() == set()
    from timm.optim import param_groups_weight_decay
    groups = param_groups_weight_decay(model, 0.05, no_weight_decay_list=model.no_weight_decay())
    decayed = {id(p) for g in groups if g['weight_decay'] for p in g['params']}
    assert id(model.pos_embed1) in decayed and id(model.block1[0].attn.an_bias) in decayed
    assert id(model.block1[0].attn.q.bias) not in decayed
    flat = timm.create_model('flatten_pvt_t')

    # every parameter lands in a layer-decay group: stem first, blocks in order (a stage's patch embedding with its
    # first block, the final norm with the last block), the head last
    from timm.optim import param_groups_layer_decay
    groups = param_groups_layer_decay(flat, weight_decay=0.05, layer_decay=0.9)
    grouped = {p for g in groups for p in g['params']}
    assert len(grouped) == len(list(flat.parameters()))
    from timm.models import group_parameters
    layers = [names for _, names in sorted(group_parameters(flat, flat.group_matcher(coarse=False)).items())]
    assert {'pos_embed1', 'patch_embed1.proj.weight'} <= set(layers[0])
    order = [next(i for i, names in enumerate(layers) if name in names)
             for name in ('block1.1.norm1.weight', 'patch_embed2.proj.weight', 'block2.0.attn.q.weight',
                          'block4.1.mlp.fc2.bias', 'norm.weight', 'head.weight')]
    assert order == sorted(order) and order[0] < order[1] == order[2] < order[3] == order[4] < order[5]


def test_grad_checkpointing_matches(tiny_models):
    torch.manual_seed(0)
    model = timm.create_model('flatten_pvt_t', num_classes=5)
    assert_grad_checkpointing_matches(model, torch.randn(1, 3, 64, 64))


def test_too_small_input_names_model_and_size(tiny_models):
    with pytest.raises(ValueError, match=r'flatten_pvt_t .*at least 32x32.*got 31x64'):
        tiny_models['flatten_pvt_t'](torch.randn(1, 3, 31, 64))
    tiny_models['flatten_pvt_t'](torch.randn(1, 3, 32, 35))  # the smallest size works


@pytest.mark.parametrize('name', TINY)
def test_official_checkpoint_loads_strictly(name, tiny_models, tmp_path):
    source = tiny_models[name]
    path = tmp_path / f'{name}.pth'
    save_official_checkpoint(path, source.state_dict())
    assert 'yacs' not in sys.modules
    model = create_from_official(name, path).eval()
    assert 'yacs' not in sys.modules  # nothing was imported to read the config
    x = torch.randn(1, 3, 96, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x), rtol=0, atol=0)

    # features_only and another class count load from the same file
    feats = create_from_official(name, path, features_only=True)
    with torch.no_grad():
        torch.testing.assert_close(feats(x)[-1], source.forward_features(x))
    ten = create_from_official(name, path, num_classes=10)
    torch.testing.assert_close(ten.block2[1].mlp.fc1.weight, source.block2[1].mlp.fc1.weight)


def test_wrong_keys_and_shapes_are_named(tiny_models, tmp_path):
    model = tiny_models['agent_pvt_t']
    sd = dict(model.state_dict())
    sd['block1.0.attn.qkv.weight'] = sd.pop('block1.0.attn.q.weight')
    with pytest.raises(CheckpointError, match=r'missing keys: block1\.0\.attn\.q\.weight.*'
                                              r'unexpected keys: block1\.0\.attn\.qkv\.weight'):
        checkpoint_filter_fn(sd, model)

    sd = dict(model.state_dict())
    sd['block2.1.mlp.fc1.weight'] = torch.zeros(10, 128)
    path = tmp_path / 'bad.pth'
    save_official_checkpoint(path, sd)
    with pytest.raises(CheckpointError, match=r'shape mismatch: block2\.1\.mlp\.fc1\.weight \(10, 128\) vs model '
                                              r'\(1024, 128\)'):
        create_from_official('agent_pvt_t', path)

    # a FLatten file does not fit an Agent model: the error names the keys, not a pickle or shape trace
    with pytest.raises(CheckpointError, match=r'unexpected keys: .*(positional_encoding|scale|norm)'):
        checkpoint_filter_fn(tiny_models['flatten_pvt_t'].state_dict(), model)


def test_resolution_change_at_load_matches_live_resize(tiny_models):
    """A 224 checkpoint loaded into a 256 model gives the same outputs as the 224 model run at 256."""
    for name in TINY:
        source = tiny_models[name]
        model = timm.create_model(name, img_size=256).eval()
        sd = checkpoint_filter_fn({'model': source.state_dict()}, model)  # whole-file layout accepted too
        model.load_state_dict(sd, strict=True)
        torch.testing.assert_close(sd['pos_embed1'], resize_tokens_grid(source.pos_embed1, (56, 56), (64, 64)))
        if name.startswith('agent'):
            assert sd['block1.1.attn.ha_bias'].shape == (1, 1, 64, 1, 9)
            torch.testing.assert_close(sd['block2.0.attn.aw_bias'], resize_axis(source.block2[0].attn.aw_bias, 4, 32))
        else:
            assert sd['block1.0.attn.positional_encoding'].shape == (1, 64 * 64, 64)
        x = torch.randn(1, 3, 256, 256)
        with torch.no_grad():
            torch.testing.assert_close(model(x), source(x), rtol=1e-4, atol=1e-5)


# --- downstream (detection / segmentation) agent settings ------------------------------------------------------
# official Agent-PVT-T detection / segmentation grids ('12-16-28-28')
DOWNSTREAM_PVT = [(12, 12), (16, 16), (28, 28), (28, 28)]
SMALL_PVT = dict(embed_dims=(16, 32, 40, 64), depths=(1, 1, 1, 1))


def test_downstream_agent_shapes_reach_every_stage():
    default = timm.create_model('agent_pvt_t', **SMALL_PVT)
    model = timm.create_model('agent_pvt_t', downstream_agent_shapes=DOWNSTREAM_PVT, **SMALL_PVT)
    for i, (shape, n) in enumerate(zip(DOWNSTREAM_PVT, (9, 16, 49, 49))):
        attn, base = getattr(model, f'block{i + 1}')[0].attn, getattr(default, f'block{i + 1}')[0].attn
        assert attn.agent_shape == shape and attn.agent_num == n
        assert base.agent_shape == base.agent_grid and base.num_agents == n
    # merged with explicit per-stage attention arguments
    custom = timm.create_model('agent_pvt_t', downstream_agent_shapes=[None, 5, (2, 3), None], **SMALL_PVT,
                               stage_attn_kwargs=[dict(agent_num=n) for n in (4, 9, 4, 4)])
    assert [getattr(custom, f'block{i}')[0].attn.agent_shape for i in (1, 2, 3, 4)] == [(2, 2), (5, 5), (2, 3), (2, 2)]
    with pytest.raises(ValueError, match='downstream_agent_shapes has 2 entries'):
        timm.create_model('agent_pvt_t', downstream_agent_shapes=[(12, 12), (16, 16)], **SMALL_PVT)


def test_imagenet_checkpoint_loads_strictly_into_downstream_model(tmp_path):
    source = timm.create_model('agent_pvt_t', **SMALL_PVT)
    path = save_official_checkpoint(tmp_path / 'agent_pvt_t.pth', source.state_dict())
    model = create_from_official('agent_pvt_t', path, downstream_agent_shapes=DOWNSTREAM_PVT, **SMALL_PVT)
    reference = source.state_dict()
    assert model.state_dict().keys() == reference.keys()
    for name, value in model.state_dict().items():
        assert torch.equal(value, reference[name]), name


def test_downstream_features_at_detection_like_size_have_shapes_and_finite_grads():
    model = timm.create_model('agent_pvt_t', downstream_agent_shapes=DOWNSTREAM_PVT, **SMALL_PVT)
    feats = model.forward_intermediates(torch.randn(1, 3, 200, 264), intermediates_only=True)
    assert [tuple(f.shape) for f in feats] == [(1, 16, 50, 66), (1, 32, 25, 33), (1, 40, 12, 16), (1, 64, 6, 8)]
    sum(f.square().mean() for f in feats).backward()
    for name, p in model.named_parameters():
        if name.startswith('head.'):
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if name.endswith(('an_bias', 'na_bias', 'ah_bias', 'aw_bias', 'ha_bias', 'wa_bias')):
            assert p.grad.abs().sum() > 0, name
