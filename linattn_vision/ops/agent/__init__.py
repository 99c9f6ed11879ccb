from .op import agent_attention, agent_attention_reference, agent_attention_tokens, dense_bias
from .pooling import adaptive_avg_pool_tokens

__all__ = ['adaptive_avg_pool_tokens', 'agent_attention', 'agent_attention_reference', 'agent_attention_tokens',
           'dense_bias']
