"""Write checkpoints in the official FLatten / Agent-Attention release layout, for loading tests.

Release files are ``{'model': state_dict, 'optimizer': ..., 'config': <yacs CfgNode>, 'epoch': ...}``. The yacs
class is faked here only while saving, so loading has to work without yacs, as it must for users.
"""
import sys
import types
from typing import Any, Mapping

import torch


def save_official_checkpoint(path, state_dict: Mapping[str, torch.Tensor], **extra: Any):
    yacs, config = types.ModuleType('yacs'), types.ModuleType('yacs.config')
    node = type('CfgNode', (dict,), {'__module__': 'yacs.config'})
    config.CfgNode, yacs.config = node, config
    sys.modules['yacs'], sys.modules['yacs.config'] = yacs, config
    try:
        cfg = node(MODEL=node(TYPE='official', DROP_PATH_RATE=0.1), DATA=node(IMG_SIZE=224))
        torch.save({'model': dict(state_dict), 'optimizer': {'state': {}, 'param_groups': []}, 'config': cfg,
                    'epoch': 299, 'max_accuracy': 75.0, **extra}, path)
    finally:
        del sys.modules['yacs'], sys.modules['yacs.config']
    return path
