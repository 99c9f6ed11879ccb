"""Focused linear attention: exact reference and the dispatching op (Triton on CUDA, reference elsewhere)."""
from .reference import focused_linear_attention_reference, focus
from .op import focused_linear_attention, use_reference

__all__ = ['focused_linear_attention', 'focused_linear_attention_reference', 'focus', 'use_reference']
