"""Detection and segmentation end to end on CPU: tools/train.py, resume, tools/test.py, torchrun, bad input.

The configs are the shipped ones (configs/det, configs/seg) shrunk through --cfg-style overrides: tiny backbones
(one block a stage, narrow), narrow heads, 64 px images of the demo COCO / ADE20K data generated in tmp_path.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tool_helpers import free_port  # tests/tool_helpers.py

pytestmark = [pytest.mark.mm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
TINY_PVT = "dict(depths=(1, 1, 1, 1), embed_dims=(16, 32, 40, 64))"


@pytest.fixture(scope='module')
def demo_roots(tmp_path_factory):
    from linattn_vision.data import make_demo_data
    root = tmp_path_factory.mktemp('demo')
    return make_demo_data(root, tasks=('coco', 'ade'), num_train=4, num_val=2, size=64, progress=False, log=None)


def det_config(tmp_path, coco_root):
    from linattn_vision.data import DEMO_CLASSES
    path = tmp_path / 'mask_rcnn_tiny.py'
    path.write_text(f"""
_base_ = '{REPO}/configs/det/mask-rcnn_flatten-pvt-t_fpn_1x_coco.py'
data_root = '{coco_root}/'
metainfo = dict(classes={tuple(DEMO_CLASSES)!r})
model = dict(
    backbone=dict(model_kwargs={TINY_PVT}, drop_path_rate=0.0, init_cfg=None),
    neck=dict(in_channels=[16, 32, 40, 64], out_channels=32),
    rpn_head=dict(in_channels=32, feat_channels=32),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=32),
        bbox_head=dict(in_channels=32, fc_out_channels=64, num_classes={len(DEMO_CLASSES)}),
        mask_roi_extractor=dict(out_channels=32),
        mask_head=dict(num_convs=1, in_channels=32, conv_out_channels=32, num_classes={len(DEMO_CLASSES)})),
    train_cfg=dict(rpn_proposal=dict(nms_pre=200, max_per_img=100), rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=200, max_per_img=100), rcnn=dict(max_per_img=20)))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(64, 64), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(64, 64), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False, dataset=dict(
    data_root=data_root, metainfo=metainfo, pipeline=train_pipeline, filter_cfg=dict(filter_empty_gt=True, min_size=0)))
val_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False, dataset=dict(
    data_root=data_root, metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=1, val_interval=1)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1))
""")
    return path


def seg_config(tmp_path, ade_root):
    from linattn_vision.data import DEMO_SEG_CLASSES, DEMO_SEG_PALETTE
    path = tmp_path / 'fpn_tiny.py'
    path.write_text(f"""
_base_ = '{REPO}/configs/seg/fpn_agent-pvt-t_80k_ade20k-512x512.py'
data_root = '{ade_root}'
metainfo = dict(classes={tuple(DEMO_SEG_CLASSES)!r}, palette={[list(c) for c in DEMO_SEG_PALETTE]!r})
crop_size = (64, 64)
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(model_kwargs={TINY_PVT}, drop_path_rate=0.0, init_cfg=None),
    neck=dict(in_channels=[16, 32, 40, 64], out_channels=16),
    decode_head=dict(in_channels=[16, 16, 16, 16], channels=16, num_classes={len(DEMO_SEG_CLASSES)}, norm_cfg=norm_cfg))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(128, 64), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 64), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
# the ADE20K layout with the demo's own classes (ADE20KDataset accepts only subsets of its 150 names)
demo_dataset = dict(type='BaseSegDataset', data_root=data_root, metainfo=metainfo, img_suffix='.jpg',
                    seg_map_suffix='.png', reduce_zero_label=True)
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(demo_dataset, pipeline=train_pipeline))
val_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                      dataset=dict(demo_dataset, pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=2, val_interval=2)
param_scheduler = [dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=2, by_epoch=False)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
""")
    return path


def run_tool(args, timeout=600, env=None):
    proc = subprocess.run([PYTHON, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, OMP_NUM_THREADS='1', **(env or {})))
    return proc.returncode, proc.stdout + proc.stderr


def metric(output, name):
    """The last value of ``name`` (e.g. coco/bbox_mAP, mIoU) in a tool's log."""
    values = re.findall(rf'{re.escape(name)}:\s*([-0-9.]+)', output)
    assert values, f'{name} not reported:\n{output[-3000:]}'
    return float(values[-1])


def test_mask_rcnn_train_resume_test(tmp_path, demo_roots):
    config = det_config(tmp_path, demo_roots['coco'])
    work_dir = tmp_path / 'work'
    rc, out = run_tool(['tools/train.py', config, '--work-dir', work_dir])
    assert rc == 0, out[-4000:]
    assert (work_dir / 'epoch_1.pth').is_file()
    assert 0.0 <= metric(out, 'coco/bbox_mAP') <= 1.0

    rc, out = run_tool(['tools/train.py', config, '--work-dir', work_dir, '--resume',
                        '--cfg-options', 'train_cfg.max_epochs=2'])
    assert rc == 0, out[-4000:]
    assert re.search(r'resumed? .*epoch[ _]1|Load checkpoint from .*epoch_1\.pth', out, re.I), out[-4000:]
    assert (work_dir / 'epoch_2.pth').is_file()

    rc, out = run_tool(['tools/test.py', config, work_dir / 'epoch_2.pth', '--work-dir', tmp_path / 'test'])
    assert rc == 0, out[-4000:]
    for name in ('coco/bbox_mAP', 'coco/segm_mAP'):
        assert 0.0 <= metric(out, name) <= 1.0


def test_semantic_fpn_train_resume_test(tmp_path, demo_roots):
    config = seg_config(tmp_path, demo_roots['ade'])
    work_dir = tmp_path / 'work'
    rc, out = run_tool(['tools/train.py', config, '--work-dir', work_dir])
    assert rc == 0, out[-4000:]
    assert (work_dir / 'iter_2.pth').is_file()

    rc, out = run_tool(['tools/train.py', config, '--work-dir', work_dir, '--resume', work_dir / 'iter_2.pth',
                        '--cfg-options', 'train_cfg.max_iters=4', 'param_scheduler.0.end=4'])
    assert rc == 0, out[-4000:]
    assert (work_dir / 'iter_4.pth').is_file() and not (work_dir / 'iter_1.pth').exists()

    rc, out = run_tool(['tools/test.py', config, work_dir / 'iter_4.pth', '--work-dir', tmp_path / 'test'])
    assert rc == 0, out[-4000:]
    assert 0.0 <= metric(out, 'mIoU') <= 100.0
    assert 0.0 <= metric(out, 'aAcc') <= 100.0


def test_compiled_semantic_fpn_trains_and_evaluates(tmp_path, demo_roots):
    """--compile compiles the segmentor's backbone and neck (not the decode head's loss, not mmengine's train_step);
    aot_eager: Dynamo + AOTAutograd without inductor's C++ build."""
    config = seg_config(tmp_path, demo_roots['ade'])
    rc, out = run_tool(['tools/train.py', config, '--work-dir', tmp_path / 'work', '--compile', 'aot_eager'])
    assert rc == 0, out[-4000:]
    assert "torch.compile(backend='aot_eager') on backbone, neck" in out, out[-4000:]
    assert 'Model has been "compiled"' not in out  # (mmengine's whole-train_step compile)
    assert 0.0 <= metric(out, 'mIoU') <= 100.0


def test_two_process_torchrun_gloo_trains_and_evaluates(tmp_path, demo_roots):
    # the shipped config as is (nccl, CUDA device ids): the driver switches to gloo and CPU DDP without CUDA
    config = seg_config(tmp_path, demo_roots['ade'])
    work_dir = tmp_path / 'work'
    rc, out = run_tool(['-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={free_port()}',
                        'tools/train.py', config, '--work-dir', work_dir, '--launcher', 'pytorch'])
    assert rc == 0, out[-4000:]
    assert (work_dir / 'iter_2.pth').is_file()
    assert 0.0 <= metric(out, 'mIoU') <= 100.0
    assert re.search(r'world[_ ]size:?\s*2|distributed.*True', out, re.I), out[-4000:]


def _one_line_error(rc, out, *needles):
    assert rc != 0
    assert 'Traceback' not in out, out[-3000:]
    lines = [line for line in out.splitlines() if all(n in line for n in needles)]
    assert lines, f'no line naming {needles}:\n{out[-3000:]}'


def test_bad_input_gives_one_line(tmp_path, demo_roots):
    config = det_config(tmp_path, demo_roots['coco'])
    missing = tmp_path / 'no_such_coco'
    rc, out = run_tool(['tools/train.py', config, '--work-dir', tmp_path / 'w1', '--cfg-options',
                        f'train_dataloader.dataset.data_root={missing}'])
    _one_line_error(rc, out, str(missing))

    bad_json = tmp_path / 'broken.json'
    bad_json.write_text('{"images": [')
    rc, out = run_tool(['tools/train.py', config, '--work-dir', tmp_path / 'w2', '--cfg-options',
                        f'train_dataloader.dataset.ann_file={bad_json}'])
    _one_line_error(rc, out, str(bad_json))

    rc, out = run_tool(['tools/train.py', config, '--work-dir', tmp_path / 'w3', '--cfg-options',
                        'model.backbone.type=FLattenNope'])
    _one_line_error(rc, out, 'FLattenNope')

    wrong = tmp_path / 'wrong.pth'
    import torch
    torch.save({'model': {'blocks.0.weight': torch.zeros(2)}}, wrong)
    rc, out = run_tool(['tools/train.py', config, '--work-dir', tmp_path / 'w4', '--cfg-options',
                        f'model.backbone.pretrained={wrong}'])
    _one_line_error(rc, out, str(wrong), 'blocks.0.weight')
