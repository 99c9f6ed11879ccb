from .op import layer_norm_to, runs_fused

__all__ = ['layer_norm_to', 'runs_fused']
