"""Agent attention core (Agent Attention, ECCV 2024).

agent aggregation: V_A = softmax(A K^T * s + B1) V      (agents attend to all tokens)
agent broadcast:   O   = softmax(Q A^T * s + B2) V_A    (tokens attend to the agents)
Both softmax steps go through scaled_dot_product_attention with an additive float bias that broadcasts
over the batch, so fused kernels do the work and memory stays linear in N.
"""
import torch.nn.functional as F


def agent_attention(q, k, v, agent, agent_bias=None, query_bias=None, scale=None, dropout_p: float = 0.0):
    """Args (head-split layout):
        q: (B, h, N, d), k, v: (B, h, Nk, d), agent: (B, h, n, d)
        agent_bias: broadcastable to (B, h, n, Nk) (B1), query_bias: broadcastable to (B, h, N, n) (B2)
        scale: softmax scale, default d ** -0.5
    Returns: (B, h, N, d)
    """
    if scale is None:
        scale = q.shape[-1] ** -0.5
    if agent_bias is not None:
        agent_bias = agent_bias.to(q.dtype)
    if query_bias is not None:
        query_bias = query_bias.to(q.dtype)
    agent_v = F.scaled_dot_product_attention(agent, k, v, attn_mask=agent_bias, dropout_p=dropout_p, scale=scale)
    return F.scaled_dot_product_attention(q, agent, agent_v, attn_mask=query_bias, dropout_p=dropout_p, scale=scale)


def agent_attention_reference(q, k, v, agent, agent_bias=None, query_bias=None, scale=None):
    """Plain softmax-matmul evaluation (use in float64 as the test oracle)."""
    if scale is None:
        scale = q.shape[-1] ** -0.5
    a = (agent * scale) @ k.transpose(-2, -1)
    if agent_bias is not None:
        a = a + agent_bias
    agent_v = a.softmax(dim=-1) @ v
    b = (q * scale) @ agent.transpose(-2, -1)
    if query_bias is not None:
        b = b + query_bias
    return b.softmax(dim=-1) @ agent_v
