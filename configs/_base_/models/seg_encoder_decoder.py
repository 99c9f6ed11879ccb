# mmseg 1.x EncoderDecoder at 512x512 on ADE20K, the part Semantic FPN (fpn_seg.py) and UperNet (upernet.py) share;
# they add the heads, configs/seg/* the FLatten / Agent backbone.
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=(512, 512))
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
