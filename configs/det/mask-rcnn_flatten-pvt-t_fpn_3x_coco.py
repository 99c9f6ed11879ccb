# Mask R-CNN 3x (multi-scale, 36 epochs) with a flatten-pvt-t backbone on COCO.
_base_ = [
    '../_base_/models/mask_rcnn_fpn.py',
    '../_base_/datasets/coco_instance_ms3x.py',
    '../_base_/schedules/det_3x.py',
    '../_base_/det_runtime.py',
]
# official ImageNet-1k release of the backbone (or a timm / safetensors file of this toolkit)
pretrained = 'checkpoints/flatten_pvt_t.pth'
model = dict(
    backbone=dict(
        type='FLattenPVT',
        arch='t',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 320, 512]))
# AdamW as PVT: lr 2e-4, weight decay 1e-4
optim_wrapper = dict(optimizer=dict(lr=0.0002, weight_decay=0.0001))
