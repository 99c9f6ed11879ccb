"""The agent det/seg configs carry the official downstream agent grids to the timm model."""
from pathlib import Path

import pytest

pytestmark = pytest.mark.mm

REPO = Path(__file__).resolve().parents[2]
# LeapLabTHU/Agent-Attention downstream configs: agent_swin_*_9-12-14-7, agent_pvt_*_12-16-28-28
OFFICIAL = {
    'swin': [(9, 9), (12, 12), (14, 14), (7, 7)],
    'pvt': [(12, 12), (16, 16), (28, 28), (28, 28)],
}
CONFIGS = sorted(str(p.relative_to(REPO)) for p in (REPO / 'configs').glob('[ds]e[tg]/*agent-*.py'))


def test_every_agent_config_is_checked():
    assert len(CONFIGS) >= 8 and any('seg/' in c for c in CONFIGS) and any('det/' in c for c in CONFIGS)


@pytest.mark.parametrize('config', CONFIGS)
def test_config_passes_official_downstream_agent_grids(config):
    from mmengine.config import Config
    from mmengine.registry import MODELS

    from linattn_vision.mm import backbones  # noqa: F401  (registers the backbones)

    backbone = Config.fromfile(REPO / config).model.backbone
    family = 'swin' if 'swin' in config else 'pvt'
    assert [tuple(s) for s in backbone.model_kwargs.downstream_agent_shapes] == OFFICIAL[family]
    # the grids reach the attention modules of a (narrowed) backbone built from the config
    small = dict(depths=(1, 1, 1, 1), embed_dim=16, num_heads=(1, 2, 4, 8)) if family == 'swin' else \
        dict(depths=(1, 1, 1, 1), embed_dims=(16, 32, 40, 64))
    cfg = dict(backbone, model_kwargs=dict(backbone.model_kwargs, **small), init_cfg=None)
    model = MODELS.build(cfg).model
    shapes = [m.agent_shape for m in model.modules() if hasattr(m, 'agent_shape')]
    expected = OFFICIAL[family][:3] if family == 'swin' else OFFICIAL[family]  # Agent-Swin-T stage 4: windows
    assert shapes == expected
