"""nn.Modules built on the attention ops."""
from .agent import AgentAttention, AgentCore
from .focused_linear import FocusedLinearAttention, FocusedLinearCore
from .norm import LayerNorm, fuse_layer_norms, fused_layer_norm
from .pos_embed import (
    GridCache, memoize, relative_position_index, resize_axis, resize_grid, resize_rel_pos_table, resize_tokens_grid,
    to_hw,
)

__all__ = [
    'AgentAttention', 'AgentCore', 'FocusedLinearAttention', 'FocusedLinearCore', 'LayerNorm',
    'GridCache', 'fuse_layer_norms', 'fused_layer_norm', 'memoize', 'relative_position_index', 'resize_axis',
    'resize_grid', 'resize_rel_pos_table', 'resize_tokens_grid', 'to_hw',
]
