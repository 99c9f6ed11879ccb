"""timm model families. Importing this module registers every model with timm."""
import importlib

# one file a backbone skeleton; each registers its FLatten and Agent variants at the bottom
_FAMILIES = ('swin', 'pvt', 'pvt_v2', 'cswin', 'deit')
for _name in _FAMILIES:
    importlib.import_module(f'.{_name}', __name__)
