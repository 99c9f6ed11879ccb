"""FLatten and Agent-attention vision backbones for timm, mmdet and mmsegmentation.

``import linattn_vision`` registers every model with timm; nothing here imports mmdet or mmseg.
"""
__version__ = '0.1.0'

from . import models  # noqa: F401  (registers the timm models)
