from .op import agent_attention, agent_attention_reference

__all__ = ['agent_attention', 'agent_attention_reference']
