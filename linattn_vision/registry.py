"""mmengine resolves a config's ``default_scope = 'linattn_vision'`` by importing ``linattn_vision.registry``.

The registries live with the rest of the OpenMMLab glue in :mod:`linattn_vision.mm.registry`; this module is only
imported by mmengine (``import linattn_vision`` does not touch it), so the core package stays free of mmengine.
"""
from .mm.registry import *  # noqa: F401,F403
from .mm.registry import SCOPE  # noqa: F401
