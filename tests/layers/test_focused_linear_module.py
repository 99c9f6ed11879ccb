"""FocusedLinearAttention against a float64 re-statement of the official module forward (FLatten-Transformer)."""
import pytest
import torch
import torch.nn.functional as F

from linattn_vision.layers import FocusedLinearAttention, FocusedLinearCore, resize_tokens_grid


def official_fla_forward(m, x, hw, pos=None):
    """The official FocusedLinearAttention.forward, written out step by step (no ops)."""
    B, N, C = x.shape
    H, W = hw
    h = m.num_heads
    if m.split_qkv:
        q = F.linear(x, m.q.weight, m.q.bias)
        k, v = F.linear(x, m.kv.weight, m.kv.bias).reshape(B, N, 2, C).permute(2, 0, 1, 3)
    else:
        q, k, v = F.linear(x, m.qkv.weight, m.qkv.bias).reshape(B, N, 3, C).permute(2, 0, 1, 3)
    k = k + (m.positional_encoding if pos is None else pos)
    scale = F.softplus(m.scale)
    q = (F.relu(q) + 1e-6) / scale
    k = (F.relu(k) + 1e-6) / scale
    q_norm, k_norm = q.norm(dim=-1, keepdim=True), k.norm(dim=-1, keepdim=True)
    q, k = q ** m.focusing_factor, k ** m.focusing_factor
    q = q / q.norm(dim=-1, keepdim=True) * q_norm
    k = k / k.norm(dim=-1, keepdim=True) * k_norm
    q, k, v = (t.reshape(B, N, h, -1).permute(0, 2, 1, 3) for t in (q, k, v))
    z = 1 / (q @ k.mean(dim=-2, keepdim=True).transpose(-2, -1) + 1e-6)
    kv = (k.transpose(-2, -1) * N ** -0.5) @ (v * N ** -0.5)
    out = (q @ kv * z).transpose(1, 2).reshape(B, N, C)
    v = v.reshape(B * h, H, W, -1).permute(0, 3, 1, 2)
    out = out + F.conv2d(v, m.dwc.weight, m.dwc.bias, padding=m.dwc.padding, groups=m.dwc.groups).reshape(
        B, C, N).permute(0, 2, 1)
    return F.linear(out, m.proj.weight, m.proj.bias)


def _randomize(m):
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3)
    return m


@pytest.mark.parametrize('split_qkv', [False, True])
def test_module_matches_official_forward(split_qkv):
    m = _randomize(FocusedLinearAttention(24, 3, (6, 6), split_qkv=split_qkv, kernel_size=5)).double().eval()
    assert ('q.weight' in m.state_dict()) == split_qkv and ('qkv.weight' in m.state_dict()) != split_qkv
    x = torch.randn(2, 36, 24, dtype=torch.float64)
    torch.testing.assert_close(m(x, (6, 6)), official_fla_forward(m, x, (6, 6)), rtol=1e-9, atol=1e-9)


def test_gradients_match_official_forward_on_a_non_square_grid():
    """Every parameter's and the input's gradient, float64: in particular the DWC, which runs as one C-channel
    depthwise conv with the shared head kernel repeated (the official code convolves each head apart)."""
    m = _randomize(FocusedLinearAttention(24, 3, (4, 6), kernel_size=5)).double().train()
    x = torch.randn(2, 24, 24, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 24, 24, dtype=torch.float64)
    params = [x] + list(m.parameters())
    ours = torch.autograd.grad(m(x, (4, 6)), params, g)
    theirs = torch.autograd.grad(official_fla_forward(m, x, (4, 6)), params, g)
    names = ['x'] + [n for n, _ in m.named_parameters()]
    assert 'dwc.weight' in names and 'dwc.bias' in names
    for name, a, b in zip(names, ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, msg=lambda msg: f'{name}: {msg}')


def test_float32_module_close_to_float64():
    m = _randomize(FocusedLinearAttention(32, 2, (8, 8))).eval()
    x = torch.randn(2, 64, 32)
    ref = official_fla_forward(m.double(), x.double(), (8, 8))
    out = m.float()(x, (8, 8))
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-4)


def test_parameter_names_and_shapes_are_official():
    m = FocusedLinearAttention(96, 3, (56, 56))
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {
        'dwc.weight': (32, 1, 5, 5), 'dwc.bias': (32,), 'scale': (1, 1, 96), 'positional_encoding': (1, 3136, 96),
        'qkv.weight': (288, 96), 'qkv.bias': (288,), 'proj.weight': (96, 96), 'proj.bias': (96,)}


def test_positional_encoding_resized_bicubic_to_live_grid():
    m = _randomize(FocusedLinearAttention(16, 2, (6, 6))).double().eval()
    x = torch.randn(1, 8 * 10, 16, dtype=torch.float64)
    grid = m.positional_encoding.reshape(1, 6, 6, 16).permute(0, 3, 1, 2)
    pos = F.interpolate(grid, size=(8, 10), mode='bicubic', align_corners=False).permute(0, 2, 3, 1).reshape(
        1, 80, 16)
    torch.testing.assert_close(m.pos_embed((8, 10)), pos)
    torch.testing.assert_close(m(x, (8, 10)), official_fla_forward(m, x, (8, 10), pos=pos), rtol=1e-9, atol=1e-9)
    # the default grid uses the parameter itself, no interpolation
    assert m.pos_embed((6, 6)) is m.positional_encoding


def test_pos_cache_reused_without_grad_and_invalidated_by_new_weights():
    m = _randomize(FocusedLinearAttention(16, 2, (6, 6))).eval()
    with torch.no_grad():
        first = m.pos_embed((4, 5))
        assert m.pos_embed((4, 5)) is first
        assert m.pos_embed((5, 4)) is not first
    state = {k: v.clone() for k, v in m.state_dict().items()}
    state['positional_encoding'] += 1.0
    m.load_state_dict(state)
    with torch.no_grad():
        fresh = m.pos_embed((4, 5))
    torch.testing.assert_close(fresh, first + 1.0)


def test_gradient_reaches_positional_encoding_at_other_size():
    m = _randomize(FocusedLinearAttention(16, 2, (6, 6))).train()
    for _ in range(2):  # a cached graph would fail on the second backward
        m.zero_grad()
        m(torch.randn(2, 35, 16), (5, 7)).sum().backward()
        assert m.positional_encoding.grad is not None and m.positional_encoding.grad.abs().sum() > 0


def test_core_attend_for_models_with_own_qkv():
    core = _randomize(FocusedLinearCore(16, 2, (4, 4))).double()
    assert sorted(core.state_dict()) == ['dwc.bias', 'dwc.weight', 'positional_encoding', 'scale']
    full = FocusedLinearAttention(16, 2, (4, 4)).double()
    full.load_state_dict({**full.state_dict(), **core.state_dict()})
    x = torch.randn(2, 16, 16, dtype=torch.float64)
    q, k, v = F.linear(x, full.qkv.weight, full.qkv.bias).chunk(3, dim=-1)
    torch.testing.assert_close(F.linear(core.attend(q, k, v, (4, 4)), full.proj.weight, full.proj.bias),
                               full(x, (4, 4)))


def test_wrong_token_count_is_a_clear_error():
    m = FocusedLinearAttention(16, 2, (4, 4))
    with pytest.raises(ValueError, match='do not form the 4x5 grid'):
        m(torch.randn(1, 16, 16), (4, 5))


def test_resize_tokens_grid_identity_and_shape():
    pos = torch.randn(1, 12, 3)
    assert resize_tokens_grid(pos, (3, 4), (3, 4)) is pos
    assert resize_tokens_grid(pos, (3, 4), (6, 2)).shape == (1, 12, 3)
    with pytest.raises(ValueError, match='not the 4x4 grid'):
        resize_tokens_grid(pos, (4, 4), (2, 2))
