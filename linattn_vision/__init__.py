"""FLatten and Agent-attention vision backbones for timm, mmdet and mmsegmentation."""
__version__ = "0.1.0"
