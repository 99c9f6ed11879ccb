"""PVTv2 family: FLatten-PVTv2 as timm models."""
import sys

import pytest
import timm
import torch

import linattn_vision  # noqa: F401  (registers the models)
from linattn_vision.checkpoint import CheckpointError
from linattn_vision.layers import resize_tokens_grid
from linattn_vision.models.pvt_v2 import checkpoint_filter_fn
from model_checks import (
    assert_grad_checkpointing_matches, create_from_official, draw_flatten_params, inference_gflops, meta_param_count,
    published_roundings,
)
from official_layout import save_official_checkpoint  # tests/official_layout.py

# exact counts of the official module structure; the paper rounds them to 0.1M (b2 22.548M is quoted as 22.6M,
# i.e. via 22.55); b3 / b4 have no published count
PARAMS = {
    'flatten_pvt_v2_b0': (3_594_824, 3.6),
    'flatten_pvt_v2_b1': (12_931_240, 12.9),
    'flatten_pvt_v2_b2': (22_548_264, 22.6),
    'flatten_pvt_v2_b3': (38_273_832, None),
    'flatten_pvt_v2_b4': (51_836_968, None),
}
B0_DIMS = [32, 64, 160, 256]


@pytest.fixture(scope='module')
def b0():
    torch.manual_seed(0)
    return draw_flatten_params(timm.create_model('flatten_pvt_v2_b0').eval())


@pytest.mark.parametrize('name', sorted(PARAMS))
def test_param_count(name):
    count = meta_param_count(name)
    exact, quoted = PARAMS[name]
    assert count == exact
    if quoted is not None:
        assert quoted in published_roundings(count)


def test_flops_match_paper(b0):
    """Multiply-accumulates of matmuls and convs at 224: FLatten-PVTv2-b0 0.6G in the paper."""
    assert round(inference_gflops(b0, torch.randn(1, 3, 224, 224)) / 2, 1) == 0.6

def test_official_layout_keys(b0):
    keys = set(b0.state_dict())
    for key in ('patch_embed1.proj.weight', 'patch_embed4.norm.bias', 'block1.0.attn.q.weight',
                'block1.0.attn.kv.bias', 'block1.0.attn.dwc.weight', 'block1.0.attn.scale',
                'block1.0.attn.positional_encoding', 'block1.0.mlp.dwconv.dwconv.weight', 'block4.1.mlp.fc2.weight',
                'norm1.weight', 'norm4.bias', 'head.weight'):
        assert key in keys, key
    assert not any('.sr.' in k or 'pos_embed' in k for k in keys)
    sd = b0.state_dict()
    assert sd['patch_embed1.proj.weight'].shape == (32, 3, 7, 7)
    assert sd['block1.0.attn.positional_encoding'].shape == (1, 56 * 56, 32)
    assert sd['block3.0.attn.dwc.weight'].shape == (32, 1, 5, 5)  # head_dim 160 / 5 heads, one kernel for all heads


@pytest.mark.parametrize('size', [(224, 224), (256, 320)])
def test_forward_backward(size):
    torch.manual_seed(0)
    model = timm.create_model('flatten_pvt_v2_b0', num_classes=10)
    out = model(torch.randn(1, 3, *size))
    assert out.shape == (1, 10) and torch.isfinite(out).all()
    out.square().sum().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_features_only(b0):
    model = timm.create_model('flatten_pvt_v2_b0', features_only=True).eval()
    assert model.feature_info.channels() == B0_DIMS
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    model.load_state_dict({f'model.{k}': v for k, v in b0.state_dict().items() if not k.startswith('head')})
    x = torch.randn(1, 3, 97, 130)  # padded convs round up: 25x33, 13x17, 7x9, 4x5
    with torch.no_grad():
        feats = model(x)
        final, ref = b0.forward_intermediates(x)
    assert [tuple(f.shape) for f in feats] == [(1, c, h, w) for c, (h, w) in
                                               zip(B0_DIMS, [(25, 33), (13, 17), (7, 9), (4, 5)])]
    for f, r in zip(feats, ref):
        torch.testing.assert_close(f, r)
    torch.testing.assert_close(final, ref[-1])
    with torch.no_grad():
        torch.testing.assert_close(b0.forward_head(final), b0(x))

    last_two = timm.create_model('flatten_pvt_v2_b0', features_only=True, out_indices=(0, 1))
    assert not hasattr(last_two.model, 'block3') and not hasattr(last_two.model, 'norm4')
    assert [f.shape[1] for f in last_two(x)] == B0_DIMS[:2]


def test_timm_api(b0):
    model = timm.create_model('flatten_pvt_v2_b0')
    model.reset_classifier(3)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    assert model.no_weight_decay() == set()  # as the official recipe: positional encodings are decayed
    from timm.models import group_parameters
    layers = group_parameters(model, model.group_matcher())
    assert sum(len(v) for v in layers.values()) == len(list(model.parameters()))
    assert 'patch_embed1.proj.weight' in layers[0]
    assert_grad_checkpointing_matches(model, torch.randn(1, 3, 64, 64))


def test_any_input_size(b0):
    # padded convs keep at least one token per stage for any input; tiny and odd inputs run
    with torch.no_grad():
        assert b0(torch.randn(1, 3, 1, 7)).shape == (1, 1000)
    with pytest.raises(ValueError, match='flatten_pvt_v2_b0 expects NCHW images'):
        b0(torch.randn(3, 64, 64))


def test_official_checkpoint_loads_strictly(b0, tmp_path):
    path = tmp_path / 'flatten_pvt_v2_b0.pth'
    save_official_checkpoint(path, b0.state_dict())
    model = create_from_official('flatten_pvt_v2_b0', path)
    assert 'yacs' not in sys.modules
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), b0(x), rtol=0, atol=0)
    feats = create_from_official('flatten_pvt_v2_b0', path, features_only=True)
    with torch.no_grad():
        torch.testing.assert_close(feats(x)[-1], b0.forward_features(x))


def test_wrong_keys_and_shapes_are_named(b0, tmp_path):
    sd = dict(b0.state_dict())
    sd['block1.0.mlp.dwconv.weight'] = sd.pop('block1.0.mlp.dwconv.dwconv.weight')  # timm's own pvt_v2 naming
    with pytest.raises(CheckpointError, match=r'missing keys: block1\.0\.mlp\.dwconv\.dwconv\.weight.*'
                                              r'unexpected keys: block1\.0\.mlp\.dwconv\.weight'):
        checkpoint_filter_fn(sd, b0)
    sd = dict(b0.state_dict())
    sd['norm2.weight'] = torch.ones(65)
    path = tmp_path / 'bad.pth'
    save_official_checkpoint(path, sd)
    with pytest.raises(CheckpointError, match=r'shape mismatch: norm2\.weight \(65,\) vs model \(64,\)'):
        create_from_official('flatten_pvt_v2_b0', path)


def test_resolution_change_at_load_matches_live_resize(b0):
    model = timm.create_model('flatten_pvt_v2_b0', img_size=(256, 192)).eval()
    sd = checkpoint_filter_fn(b0.state_dict(), model)
    model.load_state_dict(sd, strict=True)
    torch.testing.assert_close(sd['block2.1.attn.positional_encoding'],
                               resize_tokens_grid(b0.block2[1].attn.positional_encoding, (28, 28), (32, 24)))
    x = torch.randn(1, 3, 256, 192)
    with torch.no_grad():
        torch.testing.assert_close(model(x), b0(x), rtol=1e-4, atol=1e-5)
