"""ImageNet classification on the mmengine Runner (mmengine + timm only; no mmcv, mmdet or mmseg).

Importing this package registers, in the ``linattn_vision`` registry scope: ``TimmClassifier`` (MODELS),
``ImageFolderDataset`` (DATASETS), ``TimmTransform`` (TRANSFORMS), ``TopKAccuracy`` (METRICS) and
``NoDecayOptimWrapperConstructor`` (OPTIM_WRAPPER_CONSTRUCTORS).
"""
from .data import ImageFolderDataset, TimmTransform
from .metric import TopKAccuracy
from .model import TimmClassifier, load_classifier_checkpoint, soft_target_cross_entropy
from .optim import NoDecayOptimWrapperConstructor, param_groups_no_decay

__all__ = [
    'ImageFolderDataset', 'TimmTransform', 'TopKAccuracy', 'TimmClassifier', 'load_classifier_checkpoint',
    'soft_target_cross_entropy', 'NoDecayOptimWrapperConstructor', 'param_groups_no_decay',
]
