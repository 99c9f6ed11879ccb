# Semantic FPN, 80k iterations at 512x512, with a flatten-pvt-t backbone on ADE20K (PVT's setting).
_base_ = [
    '../_base_/models/fpn_seg.py',
    '../_base_/datasets/ade20k.py',
    '../_base_/schedules/seg_80k.py',
    '../_base_/seg_runtime.py',
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
    neck=dict(in_channels=[64, 128, 320, 512]),
    decode_head=dict(num_classes=150))
