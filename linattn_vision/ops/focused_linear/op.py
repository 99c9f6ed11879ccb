"""Dispatch for focused linear attention.

Placeholder dispatcher: the reference path everywhere until the Triton kernels land (issue 3).
"""
import contextlib
import os

import torch

from .reference import focused_linear_attention_reference

_FORCE_REFERENCE = os.environ.get('LINATTN_FORCE_REFERENCE', '0') == '1'


@contextlib.contextmanager
def use_reference(enabled: bool = True):
    """Force the exact PyTorch path inside the block (e.g. to compare against the kernels)."""
    global _FORCE_REFERENCE
    prev, _FORCE_REFERENCE = _FORCE_REFERENCE, enabled
    try:
        yield
    finally:
        _FORCE_REFERENCE = prev


def focused_linear_attention(q, k, v, scale, pos=None, num_heads: int = 1, focusing_factor: float = 3):
    """Focused linear attention core, (B, N, C) -> (B, N, C). See reference.py for the math."""
    return focused_linear_attention_reference(q, k, v, scale, pos, num_heads, focusing_factor)
