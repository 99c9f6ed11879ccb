"""Agent attention with the official detection / segmentation agent grids (``downstream_agent_shapes``).

The oracle re-states the official downstream module (LeapLabTHU/Agent-Attention
``downstream/*/backbones/agent_swin.py`` / ``agent_pvt.py``, ``AgentAttention.forward``) in plain float64 ops:
agents pooled on the downstream grid, every bias first interpolated over the token grid, then its agent axis,
read as the trained sqrt(n) x sqrt(n) grid, interpolated to the downstream grid.
"""
import pytest
import torch
import torch.nn.functional as F

from linattn_vision.layers import AgentAttention


def official_downstream_forward(m, x, hw, agent_shape):
    """The official downstream agent attention (sr_ratio 1, no class token) step by step."""
    b, n, c = x.shape
    H, W = hw
    h = m.num_heads
    d = c // h
    p = int(m.agent_num ** 0.5)
    a = agent_shape[0] * agent_shape[1]
    if m.split_qkv:
        q = F.linear(x, m.q.weight, m.q.bias)
        k, v = F.linear(x, m.kv.weight, m.kv.bias).reshape(b, n, 2, c).permute(2, 0, 1, 3)
    else:
        q, k, v = F.linear(x, m.qkv.weight, m.qkv.bias).reshape(b, n, 3, c).permute(2, 0, 1, 3)
    agent = F.adaptive_avg_pool2d(q.reshape(b, H, W, c).permute(0, 3, 1, 2), agent_shape)
    agent = agent.reshape(b, c, -1).permute(0, 2, 1).reshape(b, a, h, d).permute(0, 2, 1, 3)
    q, k, v = (t.reshape(b, n, h, d).permute(0, 2, 1, 3) for t in (q, k, v))

    def agents_last(t):  # (h, p*p, H*W) -> (h, H*W, a): agent axis as a p x p grid, resized
        t = t.reshape(h, p, p, H * W).permute(0, 3, 1, 2)
        return F.interpolate(t, size=agent_shape, mode='bilinear').reshape(h, H * W, a)

    pb1 = agents_last(F.interpolate(m.an_bias, size=(H, W), mode='bilinear').reshape(h, p * p, -1))
    pb2 = F.interpolate((m.ah_bias + m.aw_bias).squeeze(0), size=(H, W), mode='bilinear')
    pb2 = agents_last(pb2.reshape(h, p * p, -1))
    position_bias = (pb1 + pb2).permute(0, 2, 1).unsqueeze(0)  # 1 h a N
    agent_v = ((agent * m.scale) @ k.transpose(-2, -1) + position_bias).softmax(dim=-1) @ v

    ab1 = agents_last(F.interpolate(m.na_bias, size=(H, W), mode='bilinear').reshape(h, p * p, -1))
    ab2 = F.interpolate((m.ha_bias + m.wa_bias).squeeze(0).permute(0, 3, 1, 2), size=(H, W), mode='bilinear')
    ab2 = agents_last(ab2.reshape(h, p * p, -1))
    agent_bias = (ab1 + ab2).unsqueeze(0)  # 1 h N a
    out = ((q * m.scale) @ agent.transpose(-2, -1) + agent_bias).softmax(dim=-1) @ agent_v
    out = out.transpose(1, 2).reshape(b, n, c)
    v_map = v.transpose(1, 2).reshape(b, H, W, c).permute(0, 3, 1, 2)
    out = out + F.conv2d(v_map, m.dwc.weight, m.dwc.bias, padding=1, groups=c).permute(0, 2, 3, 1).reshape(b, n, c)
    return F.linear(out, m.proj.weight, m.proj.bias)


def _randomized(m):
    torch.manual_seed(0)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.5)
    return m.double().eval()


@pytest.mark.parametrize('split_qkv', [False, True])  # Swin (qkv) and PVT (q, kv) layouts
@pytest.mark.parametrize('agent_num, agent_shape, hw', [
    (9, (5, 5), (9, 12)),    # more agents than trained, live grid larger than the trained 7x7, non-square
    (16, (6, 3), (5, 8)),    # non-square agent grid, live grid smaller than trained in one axis
    (4, (2, 2), (6, 7)),     # the trained agent grid: only the token grid is resized
])
def test_matches_official_downstream_formula(split_qkv, agent_num, agent_shape, hw):
    m = _randomized(AgentAttention(16, 2, (7, 7), agent_num=agent_num, split_qkv=split_qkv, agent_shape=agent_shape))
    x = torch.randn(2, hw[0] * hw[1], 16, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(m(x, hw), official_downstream_forward(m, x, hw, agent_shape))
    assert m.agent_tokens(x, hw).shape == (2, agent_shape[0] * agent_shape[1], 16)


def test_parameters_keep_imagenet_shapes_and_load_both_ways():
    imagenet = AgentAttention(24, 3, (14, 14), agent_num=9)
    downstream = AgentAttention(24, 3, (14, 14), agent_num=9, agent_shape=(12, 12))
    assert {k: v.shape for k, v in imagenet.state_dict().items()} == \
        {k: v.shape for k, v in downstream.state_dict().items()}
    downstream.load_state_dict(imagenet.state_dict(), strict=True)
    agent_bias, query_bias = downstream.position_biases((20, 26))
    assert agent_bias.shape == (1, 3, 144, 20 * 26) and query_bias.shape == (1, 3, 20 * 26, 144)
    assert downstream.num_agents == 144 and downstream.agent_num == 9
    assert 'agent_shape=(12, 12)' in repr(downstream) and 'agent_shape' not in repr(imagenet)


def test_agent_axis_of_the_biases_is_interpolated_as_a_grid():
    m = AgentAttention(8, 1, (4, 4), agent_num=4, agent_shape=(4, 4))
    with torch.no_grad():
        # an_bias[agent (i, j)] = i: the bias grows down the 2x2 agent grid, constant across it
        m.an_bias.copy_(torch.tensor([0., 0., 1., 1.]).reshape(1, 4, 1, 1).expand_as(m.an_bias))
        for p in (m.na_bias, m.ah_bias, m.aw_bias, m.ha_bias, m.wa_bias):
            p.zero_()
        agent_bias, _ = m.position_biases((4, 4))
    rows = agent_bias[0, 0, :, 0].reshape(4, 4)
    # bilinear 2 -> 4 (align_corners=False): 0, 0.25, 0.75, 1 down the rows, equal along each row
    torch.testing.assert_close(rows, torch.tensor([0., .25, .75, 1.]).reshape(4, 1).expand(4, 4))


def test_downstream_biases_cached_without_grad_and_trained_with_it():
    m = AgentAttention(8, 2, (6, 6), agent_num=4, agent_shape=(3, 5))
    x = torch.randn(1, 7 * 9, 8)
    with torch.no_grad():
        first = m.position_biases((7, 9))
        assert m.position_biases((7, 9))[0] is first[0]
    m(x, (7, 9)).square().mean().backward()
    for name in ('an_bias', 'na_bias', 'ah_bias', 'aw_bias', 'ha_bias', 'wa_bias'):
        grad = getattr(m, name).grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


@pytest.mark.parametrize('agent_shape', [(0, 3), (4, -1)])
def test_bad_agent_shape_is_a_clear_error(agent_shape):
    with pytest.raises(ValueError, match='agent_shape'):
        AgentAttention(8, 2, (6, 6), agent_num=4, agent_shape=agent_shape)
