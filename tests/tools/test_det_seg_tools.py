"""tools/get_flops.py and tools/benchmark.py on shrunk versions of the shipped det / seg configs (CPU, in-process)."""
import json
from pathlib import Path

import pytest
from tool_helpers import load_tool  # tests/tool_helpers.py

pytestmark = pytest.mark.mm

REPO = Path(__file__).resolve().parents[2]
TINY_PVT = "dict(depths=(1, 1, 1, 1), embed_dims=(16, 32, 40, 64))"


def tiny_retinanet(tmp_path):
    path = tmp_path / 'retinanet_tiny.py'
    path.write_text(f"""
_base_ = '{REPO}/configs/det/retinanet_agent-pvt-t_fpn_1x_coco.py'
model = dict(
    backbone=dict(model_kwargs={TINY_PVT}),
    neck=dict(in_channels=[16, 32, 40, 64], out_channels=32),
    bbox_head=dict(in_channels=32, feat_channels=32, stacked_convs=1))
""")
    return path


def tiny_semantic_fpn(tmp_path):
    path = tmp_path / 'fpn_tiny.py'
    path.write_text(f"""
_base_ = '{REPO}/configs/seg/fpn_flatten-pvt-t_80k_ade20k-512x512.py'
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    backbone=dict(model_kwargs={TINY_PVT}),
    neck=dict(in_channels=[16, 32, 40, 64], out_channels=16),
    decode_head=dict(in_channels=[16, 16, 16, 16], channels=16, norm_cfg=norm_cfg))
""")
    return path


def test_get_flops_backbone_and_whole_model(tmp_path, capsys):
    get_flops = load_tool('get_flops')
    out = tmp_path / 'flops.json'
    assert get_flops.main([str(tiny_retinanet(tmp_path)), '--shape', '64', '96', '--out', str(out)]) == 0
    result = json.loads(out.read_text())
    backbone, model = result['backbone'], result['model']
    assert result['shape'] == [64, 96]
    assert 0 < backbone['gflops'] < model['gflops']
    assert 0 < backbone['params_m'] < model['params_m']
    assert 'GFLOPs' in capsys.readouterr().out


def test_get_flops_counts_attention():
    """scaled_dot_product_attention is counted: q k^T and attn v, one MAC per multiply-add."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    get_flops = load_tool('get_flops')

    class Attend(nn.Module):
        def forward(self, q, k, v):
            return F.scaled_dot_product_attention(q, k, v)

    q, k, v = torch.randn(2, 3, 10, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 5)
    flops, params = get_flops.count(Attend(), (q, k, v))
    assert flops == 2 * 3 * 10 * 7 * (8 + 5) and params == 0


def test_benchmark_reports_images_per_second(tmp_path, capsys):
    benchmark = load_tool('benchmark')
    out = tmp_path / 'bench.json'
    config = tiny_semantic_fpn(tmp_path)
    assert benchmark.main([str(config), '--device', 'cpu', '--iters', '2', '--warmup', '1', '--shape', '64', '96',
                           '--out', str(out)]) == 0
    result = json.loads(out.read_text())
    assert result['images_per_s'] > 0 and result['peak_mem_mib'] > 0 and result['shape'] == [64, 96]
    assert 'images/s' in capsys.readouterr().out


def test_benchmark_test_size_follows_the_config():
    from mmengine.config import Config
    benchmark = load_tool('benchmark')
    det = Config.fromfile(REPO / 'configs/det/mask-rcnn_flatten-swin-t_fpn_1x_coco.py')
    seg = Config.fromfile(REPO / 'configs/seg/upernet_flatten-swin-t_160k_ade20k-512x512.py')
    assert benchmark.test_size(det) == (800, 1067)  # a 4:3 COCO image under Resize(1333, 800)
    assert benchmark.test_size(seg) == (512, 683)


def test_get_flops_counts_cascade_mask_heads_on_100_rois(tmp_path):
    """Cascade RoI heads run their mask heads on every proposal in tensor mode; get_flops counts them on the first
    100 RoIs (mmdet's StandardRoIHead convention), padding the rest with zeros so downstream shapes hold."""
    import torch
    from mmengine.config import Config
    get_flops = load_tool('get_flops')
    path = tmp_path / 'cascade_tiny.py'
    path.write_text(f"""
_base_ = '{REPO}/configs/det/cascade-mask-rcnn_flatten-swin-t_fpn_3x_coco.py'
model = dict(
    backbone=dict(model_kwargs=dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1))),
    neck=dict(in_channels=[16, 32, 64, 128]))
""")
    model = get_flops.build_model(Config.fromfile(str(path)))
    head = model.roi_head
    feats = tuple(torch.randn(1, 256, 64 // 2 ** i, 64 // 2 ** i) for i in range(5))
    boxes = torch.rand(250, 2) * 100
    rois = torch.cat([torch.zeros(250, 1), boxes, boxes + 20 + torch.rand(250, 2) * 50], 1)
    with torch.no_grad():
        full = head._mask_forward(1, feats, rois)['mask_preds']
        get_flops.cap_cascade_mask_rois(model)
        capped = head._mask_forward(1, feats, rois)['mask_preds']
    assert capped.shape == full.shape
    torch.testing.assert_close(capped[:100], full[:100])
    assert capped[100:].abs().max() == 0

    class MaskStage(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = head

        def forward(self, rois):
            return self.head._mask_forward(1, feats, rois)['mask_preds']
    with torch.no_grad():
        flops_250, _ = get_flops.count(MaskStage(), (rois,))
        flops_100, _ = get_flops.count(MaskStage(), (rois[:100],))
    assert flops_250 == flops_100 > 0


@pytest.mark.parametrize('tool', ['benchmark', 'get_flops'])
def test_tools_for_dense_configs_give_one_line_errors(tool, tmp_path, capsys):
    """A classification config failed deep inside both tools (no test Resize, no model.backbone), and a missing
    config file with mmengine's traceback."""
    classifier = REPO / 'configs' / 'demo' / 'flatten-pvt-demo_shapes-imagefolder.py'
    cases = [(classifier, "default_scope is 'linattn_vision'"), (tmp_path / 'nope.py', 'config file not found')]
    for config, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            load_tool(tool).main([str(config)])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f'{tool}.py: error: ') and message in err[0], err
