"""Attention cores: pure functions on tensors, no nn.Module state."""
from .focused_linear import focused_linear_attention, focused_linear_attention_reference
from .agent import agent_attention, agent_attention_reference

__all__ = [
    'focused_linear_attention', 'focused_linear_attention_reference',
    'agent_attention', 'agent_attention_reference',
]
