"""OpenMMLab glue (mmengine, mmdet, mmseg) for the FLatten / Agent models.

Nothing is imported here, so ``import linattn_vision.mm.<module>`` pulls in only what that module needs:
``classification`` needs mmengine + timm; ``backbones`` is for mmdet / mmseg configs. Configs load them through
``custom_imports``; the tools import them directly.
"""
