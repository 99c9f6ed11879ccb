"""Attention cores (and the backbones' fused LayerNorm): pure functions on tensors, no nn.Module state."""
from .focused_linear import focused_linear_attention, focused_linear_attention_reference
from .agent import adaptive_avg_pool_tokens, agent_attention, agent_attention_reference, agent_attention_tokens
from .layer_norm import layer_norm_to
from .softmax_attention import softmax_attention
from .depthwise_conv import depthwise_conv_tokens

__all__ = [
    'focused_linear_attention', 'focused_linear_attention_reference',
    'agent_attention', 'agent_attention_reference', 'agent_attention_tokens', 'adaptive_avg_pool_tokens',
    'layer_norm_to',
    'softmax_attention', 'depthwise_conv_tokens',
]
