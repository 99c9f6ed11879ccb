"""Write checkpoints in the official FLatten / Agent-Attention release layout, for loading tests.

Release files are ``{'model': state_dict, 'optimizer': ..., 'config': <yacs CfgNode>, 'epoch': ...}``. The yacs
class is faked here only while saving, so loading has to work without yacs, as it must for users.
"""
import sys
import types
from typing import Any, Mapping

import torch


class _CfgNode(dict):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # instance state that the real CfgNode pickles next to its items
        self.__dict__.update({'__immutable__': True, '__deprecated_keys__': set(), '__renamed_keys__': {},
                              '__new_allowed__': False})


_CfgNode.__module__, _CfgNode.__qualname__, _CfgNode.__name__ = 'yacs.config', 'CfgNode', 'CfgNode'


def save_official_checkpoint(path, state_dict: Mapping[str, torch.Tensor], **extra: Any):
    """Save ``state_dict`` as an official release file at ``path`` (entries in ``extra`` added or replaced)."""
    yacs, config = types.ModuleType('yacs'), types.ModuleType('yacs.config')
    config.CfgNode, yacs.config = _CfgNode, config
    saved = {name: sys.modules.get(name) for name in ('yacs', 'yacs.config')}
    sys.modules.update({'yacs': yacs, 'yacs.config': config})
    try:
        cfg = _CfgNode(MODEL=_CfgNode(TYPE='official', DROP_PATH_RATE=0.1), DATA=_CfgNode(IMG_SIZE=224))
        torch.save({'model': dict(state_dict), 'optimizer': {'state': {}, 'param_groups': []}, 'config': cfg,
                    'epoch': 299, 'max_accuracy': 75.0, **extra}, path)
    finally:  # loading must not find a yacs module
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return path
