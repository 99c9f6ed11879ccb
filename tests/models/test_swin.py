"""FLatten / Agent Swin: variants, timm API, official checkpoints, any input size."""
import sys

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.optim import create_optimizer_v2

import linattn_vision  # noqa: F401  (registers the models)
from linattn_vision.checkpoint import CheckpointError
from linattn_vision.layers import relative_position_index, resize_axis, resize_rel_pos_table, resize_tokens_grid
from linattn_vision.models.swin import SwinTransformer, checkpoint_filter_fn
from model_checks import create_from_official, meta_param_count
from official_layout import save_official_checkpoint  # tests/official_layout.py

# published param counts (M): FLatten README/paper (Swin-T/S/B), Agent-Attention README (T 29, S 50, B 88, S-288 50,
# B-384 88); FLatten-Swin-B-384 has no published count: its larger positional encodings and window-12 tables
# follow from the official 384 config.
PARAMS_M = {
    'flatten_swin_t': 29.2, 'flatten_swin_s': 50.5, 'flatten_swin_b': 89.0, 'flatten_swin_b_384': 91.4,
    'agent_swin_t': 28.9, 'agent_swin_s': 49.7, 'agent_swin_b': 88.1, 'agent_swin_s_288': 49.7,
    'agent_swin_b_384': 88.3,
}
# small models of the two families for the API tests: stage grids 16, 8, 4, 2 at 64; window 2 so stage 3
# has shifted windows
TINY = dict(img_size=64, embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), window_size=2)


@pytest.mark.parametrize('name', sorted(PARAMS_M))
def test_variant_builds_with_official_param_count(name):
    assert round(meta_param_count(name) / 1e6, 1) == PARAMS_M[name]


def test_variants_follow_official_configs():
    with torch.device('meta'):
        flat = timm.create_model('flatten_swin_b_384')
        agent_b = timm.create_model('agent_swin_b')
        agent_t = timm.create_model('agent_swin_t')
    assert [b.attn_type for b in flat.layers[0].blocks] == ['flatten'] * 2
    assert flat.layers[0].blocks[0].attn.grid_size == (96, 96)  # whole 384 map
    assert [(b.window_size, b.shift_size) for b in flat.layers[2].blocks[:2]] == [(12, 0), (12, 6)]
    stage3 = [b.attn_type for b in agent_b.layers[2].blocks]
    assert stage3 == ['agent'] * 2 + ['window'] * 16  # AAMB2
    assert [b.attn.agent_num for b in agent_t.layers[2].blocks] == [49] * 6
    assert agent_t.layers[0].blocks[0].attn.agent_num == 9 and agent_t.layers[3].blocks[0].attn_type == 'window'


@pytest.mark.parametrize('name', ['flatten_swin_t', 'agent_swin_t'])
@pytest.mark.parametrize('size', [(224, 224), (192, 256)])
def test_forward_backward(name, size):
    model = timm.create_model(name)
    out = model(torch.randn(1, 3, *size))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()
    out.logsumexp(-1).sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, no_grad[:5]


@pytest.mark.slow
@pytest.mark.parametrize('name', ['flatten_swin_s', 'flatten_swin_b', 'flatten_swin_b_384', 'agent_swin_s',
                                  'agent_swin_b', 'agent_swin_s_288', 'agent_swin_b_384'])
def test_larger_variants_forward_small_input(name):
    with torch.device('meta'):  # skip the slow trunc-normal init of ~90M weights
        model = timm.create_model(name).eval()
    model.to_empty(device='cpu')
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 96))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()


@pytest.mark.parametrize('name', ['flatten_swin_t', 'agent_swin_t'])
def test_features_only_and_forward_intermediates(name):
    model = timm.create_model(name, **TINY).eval()
    feats = timm.create_model(name, features_only=True, **TINY).eval()
    missing, unexpected = feats.model.load_state_dict(model.state_dict(), strict=False)
    assert not missing and all(k.startswith(('norm.', 'head.')) for k in unexpected)
    assert feats.feature_info.channels() == [16, 32, 64, 128]
    assert feats.feature_info.reduction() == [4, 8, 16, 32]
    x = torch.randn(2, 3, 80, 112)
    with torch.no_grad():
        outs = feats(x)
        inter = model.forward_intermediates(x, intermediates_only=True)
        final, inter2 = model.forward_intermediates(x)
    assert [tuple(o.shape) for o in outs] == [(2, 16, 20, 28), (2, 32, 10, 14), (2, 64, 5, 7), (2, 128, 3, 4)]
    for a, b, c in zip(outs, inter, inter2):
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a, c)
    torch.testing.assert_close(final, model.forward_features(x))


def test_features_only_out_indices_prunes():
    feats = timm.create_model('agent_swin_t', features_only=True, out_indices=(1, 2), **TINY)
    assert len(feats.model.layers) == 3 and feats.model.layers[-1].downsample is None
    outs = feats(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [32, 64]


def test_timm_api():
    model = timm.create_model('flatten_swin_t', **TINY)
    x = torch.randn(2, 3, 64, 64)
    feats = model.forward_features(x)
    assert feats.shape == (2, 2, 2, 128)  # NHWC, as timm's swin
    assert model.forward_head(feats, pre_logits=True).shape == (2, 128)
    model.reset_classifier(10)
    assert model(x).shape == (2, 10) and model.get_classifier().out_features == 10
    model.reset_classifier(0, '')
    assert model(x).shape == (2, 2, 2, 128)
    nwd = model.no_weight_decay()
    assert nwd and all(n.endswith('relative_position_bias_table') for n in nwd)
    opt = create_optimizer_v2(model, 'adamw', lr=1e-3, weight_decay=0.05, layer_decay=0.9)  # uses group_matcher
    assert len(opt.param_groups) > 4


def test_grad_checkpointing_same_result():
    torch.manual_seed(0)
    model = timm.create_model('agent_swin_t', **TINY).eval()
    x = torch.randn(1, 3, 64, 64, requires_grad=True)
    ref = model(x)
    model.set_grad_checkpointing(True)
    out = model(x)
    torch.testing.assert_close(out, ref)
    out.sum().backward()
    assert x.grad is not None


def _save_official(tmp_path, model, name='ckpt.pth', edit=None):
    """Save ``model`` as an official release file, with the official buffers (relative_position_index,
    attn_mask) in the state dict."""
    state = dict(model.state_dict())
    for stage_idx, stage in enumerate(model.layers):
        for blk_idx, blk in enumerate(stage.blocks):
            prefix = f'layers.{stage_idx}.blocks.{blk_idx}.'
            if blk.attn_type == 'window':
                state[prefix + 'attn.relative_position_index'] = relative_position_index(blk.attn.window_size)
                H = W = 64 // 4 // 2 ** stage_idx
                window, shift = blk.window_and_shift(H, W)
                if any(shift):
                    state[prefix + 'attn_mask'] = blk.shift_mask(H, W, window, shift, torch.device('cpu'))
    if edit:
        edit(state)
    return save_official_checkpoint(tmp_path / name, state), state


@pytest.mark.parametrize('name', ['flatten_swin_t', 'agent_swin_t'])
def test_official_layout_checkpoint_loads_strictly_with_identical_outputs(tmp_path, name):
    src = timm.create_model(name, **TINY).eval()
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.randn_like(p) * 0.05)  # zeros-initialised scale / positional encodings get values too
    path, state = _save_official(tmp_path, src)
    assert any(k.endswith('relative_position_index') for k in state)
    assert any(k.endswith('attn_mask') for k in state) == (name == 'flatten_swin_t')  # agent-T: no shifted stage
    assert 'yacs' not in sys.modules
    dst = create_from_official(name, path, **TINY).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)
    # the filter also takes the raw release dict
    filtered = checkpoint_filter_fn({'model': state, 'epoch': 1}, dst)
    assert set(filtered) == set(dst.state_dict())
    # and a feature extractor loads the same file
    feats = create_from_official(name, path, features_only=True, **TINY).eval()
    with torch.no_grad():
        for a, b in zip(feats(x), src.forward_intermediates(x, intermediates_only=True)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize('edit, expected', [
    (lambda s: s.pop('layers.1.blocks.0.attn.qkv.weight'), 'missing keys: layers.1.blocks.0.attn.qkv.weight'),
    (lambda s: s.__setitem__('layers.0.blocks.0.attn.qkv_renamed', s.pop('layers.0.blocks.0.attn.qkv.weight')),
     'unexpected keys: layers.0.blocks.0.attn.qkv_renamed'),
    (lambda s: s.__setitem__('layers.2.blocks.0.mlp.fc1.weight', torch.zeros(3, 3)),
     r'shape mismatch: layers.2.blocks.0.mlp.fc1.weight \(3, 3\)'),
])
def test_bad_checkpoint_names_first_offending_keys(tmp_path, edit, expected):
    src = timm.create_model('agent_swin_t', **TINY)
    path, _ = _save_official(tmp_path, src, edit=edit)
    with pytest.raises(CheckpointError, match=expected):
        create_from_official('agent_swin_t', path, **TINY)


def test_checkpoint_resized_to_another_resolution(tmp_path):
    src = timm.create_model('agent_swin_t', **TINY)
    path, state = _save_official(tmp_path, src)
    big = dict(TINY, img_size=96, window_size=3)
    dst = create_from_official('agent_swin_t', path, **big)
    got = dst.state_dict()
    torch.testing.assert_close(got['layers.0.blocks.0.attn.ah_bias'],
                               resize_axis(state['layers.0.blocks.0.attn.ah_bias'], 3, 24))
    torch.testing.assert_close(got['layers.3.blocks.0.attn.relative_position_bias_table'],
                               resize_rel_pos_table(state['layers.3.blocks.0.attn.relative_position_bias_table'],
                                                    (2, 2), (3, 3)))
    flat_src = timm.create_model('flatten_swin_t', **TINY)
    flat_path, flat_state = _save_official(tmp_path, flat_src, name='flat.pth')
    flat = create_from_official('flatten_swin_t', flat_path, **big)
    torch.testing.assert_close(flat.state_dict()['layers.1.blocks.1.attn.positional_encoding'],
                               resize_tokens_grid(flat_state['layers.1.blocks.1.attn.positional_encoding'],
                                                  (8, 8), (12, 12)))
    assert flat(torch.randn(1, 3, 96, 96)).shape == (1, 1000)


def test_new_classifier_with_pretrained_body(tmp_path):
    path, _ = _save_official(tmp_path, timm.create_model('flatten_swin_t', **TINY))
    model = create_from_official('flatten_swin_t', path, num_classes=7, **TINY)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 7)


@pytest.mark.parametrize('size', [(4, 4), (37, 61), (100, 60)])
def test_any_input_size(size):
    model = timm.create_model('agent_swin_t', **dict(TINY, window_size=3)).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, *size)).shape == (1, 1000)


def test_too_small_input_is_a_clear_error():
    model = timm.create_model('flatten_swin_t', **TINY)
    with pytest.raises(ValueError, match='flatten_swin_t takes inputs of at least 4x4 pixels; got 3x64'):
        model(torch.randn(1, 3, 3, 64))


def test_windows_follow_the_grid():
    blk = timm.create_model('flatten_swin_t', **TINY).layers[2].blocks[1]  # window 2, shift 1
    assert blk.window_and_shift(4, 4) == ((2, 2), (1, 1))
    assert blk.window_and_shift(2, 5) == ((2, 2), (0, 1))  # an axis no larger than the window is not shifted
    assert blk.window_and_shift(1, 1) == ((1, 1), (0, 0))
    x = torch.randn(1, 5, 3, 64)
    assert blk(x).shape == x.shape  # padded to whole windows and cropped back


def test_bad_attention_spec_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown attention type 'softmax'"):
        SwinTransformer(attn_types=('flatten', 'softmax', 'window', 'window'), **TINY)
    with pytest.raises(ValueError, match='stage 1: 3 attention types for 2 blocks'):
        SwinTransformer(attn_types=('flatten', ('agent',) * 3, 'window', 'window'), **TINY)


# --- downstream (detection / segmentation) agent settings ------------------------------------------------------
# official Agent-Swin-T detection / segmentation grids ('9-12-14-7'); TINY's 64 px training grids are 16, 8, 4, 2
DOWNSTREAM_SWIN = [(9, 9), (12, 12), (14, 14), (7, 7)]


def test_downstream_agent_shapes_default_unchanged_and_per_stage():
    default = timm.create_model('agent_swin_t', **TINY)
    downstream = timm.create_model('agent_swin_t', downstream_agent_shapes=DOWNSTREAM_SWIN, **TINY)
    for stage, shape, n in zip(default.layers[:3], DOWNSTREAM_SWIN, (9, 16, 49)):
        assert all(b.attn.agent_shape == b.attn.agent_grid and b.attn.num_agents == n for b in stage.blocks)
        assert all(b.agent_window is None for b in stage.blocks)
    for stage, shape in zip(downstream.layers[:3], DOWNSTREAM_SWIN):
        assert all(b.attn.agent_shape == shape for b in stage.blocks)
    assert downstream.layers[3].blocks[0].attn_type == 'window'  # stage 4 (B) ignores its agent grid
    with pytest.raises(ValueError, match='downstream_agent_shapes has 2 entries'):
        SwinTransformer(downstream_agent_shapes=[(9, 9), (12, 12)], **TINY)
    with pytest.raises(ValueError, match='agent_window must be a positive size'):
        SwinTransformer(attn_types=('agent',) * 4, agent_window=0, **TINY)


def test_imagenet_checkpoint_loads_strictly_into_downstream_model(tmp_path):
    src = timm.create_model('agent_swin_t', **TINY)
    path, _ = _save_official(tmp_path, src)
    dst = create_from_official('agent_swin_t', path, downstream_agent_shapes=DOWNSTREAM_SWIN, agent_window=8, **TINY)
    reference = src.state_dict()
    assert dst.state_dict().keys() == reference.keys()
    for name, value in dst.state_dict().items():  # ImageNet shapes, the file's values
        assert torch.equal(value, reference[name]), name
    with torch.no_grad():
        assert torch.isfinite(dst(torch.randn(1, 3, 72, 100))).all()


def test_downstream_features_at_detection_like_size_have_shapes_and_finite_grads():
    model = timm.create_model('agent_swin_t', embed_dim=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4),
                              downstream_agent_shapes=DOWNSTREAM_SWIN)
    x = torch.randn(1, 3, 200, 264)
    feats = model.forward_intermediates(x, intermediates_only=True)
    assert [tuple(f.shape) for f in feats] == [(1, 16, 50, 66), (1, 32, 25, 33), (1, 64, 13, 17), (1, 128, 7, 9)]
    sum(f.square().mean() for f in feats).backward()
    for name, p in model.named_parameters():
        if name.startswith(('norm.', 'head.')):
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if name.endswith('_bias') and 'layers.3' not in name:
            assert p.grad.abs().sum() > 0, name  # every agent bias trains at the downstream grid


def _agent_block(agent_window):
    from linattn_vision.models.swin import SwinBlock
    torch.manual_seed(0)
    blk = SwinBlock(8, 2, (6, 6), attn_type='agent', agent_num=4, agent_shape=(3, 3), agent_window=agent_window)
    with torch.no_grad():
        for p in blk.parameters():
            p.normal_(0, 0.5)
    return blk.double().eval()


def test_agent_window_is_agent_attention_inside_zero_padded_windows():
    blk = _agent_block(agent_window=4)
    x = torch.randn(2, 6, 10, 8, dtype=torch.float64)  # padded to 8x12: 2x3 windows of 4x4
    expected = torch.zeros(2, 8, 12, 8, dtype=torch.float64)
    padded = F.pad(x, (0, 0, 0, 2, 0, 2))
    with torch.no_grad():
        for i in range(0, 8, 4):
            for j in range(0, 12, 4):
                tokens = padded[:, i:i + 4, j:j + 4].reshape(2, 16, 8)
                expected[:, i:i + 4, j:j + 4] = blk.attn(tokens, (4, 4)).reshape(2, 4, 4, 8)
        torch.testing.assert_close(blk._agent_window_attn(x), expected[:, :6, :10])
        # a window no smaller than the map is the whole-map attention of the default block
        whole = _agent_block(agent_window=None)
        torch.testing.assert_close(_agent_block(agent_window=16)(x), whole(x))
        assert not torch.allclose(blk(x), whole(x))


def test_window_attention_bias_is_cached_without_grad_and_follows_the_table():
    """The shifted block's bias + mask is built once per window in inference (the same tensor each call) and rebuilt
    when the table changes in place; outputs match the uncached (gradient) path."""
    from linattn_vision.models.swin import SwinBlock
    blk = SwinBlock(32, 2, (14, 14), attn_type='window', window_size=7, shift=True).eval()
    x = torch.randn(2, 14, 14, 32)
    with torch.no_grad():
        first = blk(x)
        window, shift = blk.window_and_shift(14, 14)
        mask = blk.shift_mask(14, 14, window, shift, x.device)
        bias = blk.attn.attention_bias(window, mask, torch.float32)
        assert blk.attn.attention_bias(window, mask, torch.float32) is bias
        assert bias.shape == (1, 4 * 2, 49, 49)
        torch.testing.assert_close(blk(x), first, rtol=0, atol=0)
    fresh = blk(x)  # the table needs gradients: built again, not cached
    torch.testing.assert_close(fresh.detach(), first, rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        blk.attn.relative_position_bias_table.copy_(torch.randn_like(blk.attn.relative_position_bias_table))
        assert blk.attn.attention_bias(window, mask, torch.float32) is not bias
        changed = blk(x)
    torch.testing.assert_close(changed, blk(x).detach(), rtol=1e-6, atol=1e-6)
    assert (changed - first).abs().max() > 1e-3


@pytest.mark.parametrize('name', ['flatten_swin_t', 'agent_swin_t'])
def test_compiled_model_runs_again_without_recompiling(name):
    """The window index, shift mask and bias caches are not filled while torch.compile traces: a dict filled then
    is guarded on, so the next call recompiled (and torch 2.14 failed on the bias key's id())."""
    torch._dynamo.reset()
    model = timm.create_model(name, **TINY).eval()
    compiled = torch.compile(model, backend='eager')
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(), torch._dynamo.config.patch(error_on_recompile=True):
        outs = [compiled(x) for _ in range(3)]
        expected = model(x)
    for out in outs:
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
