# Demo detector: RetinaNet on a small FLatten-PVT (same focused linear attention as FLatten-PVT-T, fewer blocks and
# channels), trained from scratch on the bundled demo COCO data (tools/make_demo_data.py, 128x128 shape scenes).
# Run by tools/run_demo.sh; the data root comes from $LINATTN_DEMO_DATA (default data/demo).
_base_ = ['../_base_/models/retinanet_fpn.py', '../_base_/det_runtime.py']

data_root = '{{$LINATTN_DEMO_DATA:data/demo}}/coco/'
# linattn_vision.data.DEMO_CLASSES / DEMO_PALETTE (tests/tools/test_demo.py keeps them equal)
metainfo = dict(
    classes=('ellipse', 'rectangle', 'triangle', 'star', 'ring', 'cross'),
    palette=[(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180)])
image_size = 128
# GroupNorm in the neck and head: from scratch, it doubles bbox mAP@0.5 after 6 epochs (0.20 vs 0.05-0.13 without)
norm_cfg = dict(type='GN', num_groups=16, requires_grad=True)

model = dict(
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(
        type='FLattenPVT',
        arch='t',
        img_size=image_size,
        drop_path_rate=0.0,
        out_norm=dict(type='LN'),  # keeps the from-scratch features at unit scale for the fresh FPN
        model_kwargs=dict(embed_dims=(32, 64, 128, 192), depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 6),
                          mlp_ratios=(4, 4, 4, 4))),
    # objects are 16-50 px: P3-P5 (strides 8-32) with anchors of 16-90 px
    neck=dict(in_channels=[32, 64, 128, 192], out_channels=64, start_level=1, add_extra_convs=False, num_outs=3,
              norm_cfg=norm_cfg),
    bbox_head=dict(
        num_classes=6,
        in_channels=64,
        stacked_convs=2,
        feat_channels=64,
        norm_cfg=norm_cfg,
        anchor_generator=dict(octave_base_scale=2, scales_per_octave=2, strides=[8, 16, 32])),
    test_cfg=dict(score_thr=0.05, max_per_img=50))

backend_args = None
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        type='CocoDataset',
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=4),
        pipeline=train_pipeline,
        backend_args=backend_args))
val_dataloader = dict(
    batch_size=8,
    num_workers=1,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type='CocoDataset',
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'),
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args))
test_dataloader = val_dataloader
val_evaluator = dict(type='CocoMetric', ann_file=data_root + 'annotations/instances_val2017.json', metric='bbox',
                     backend_args=backend_args)
test_evaluator = val_evaluator

# from scratch: AdamW at a high lr, short warm-up, cosine decay; evaluated a few times for the metric curve
max_epochs = 24
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=6)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.05),
                     clip_grad=dict(max_norm=10.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', T_max=max_epochs, eta_min_ratio=0.05, by_epoch=True, begin=0, end=max_epochs,
         convert_to_iter_based=True),
]
auto_scale_lr = dict(enable=False, base_batch_size=8)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', interval=max_epochs, max_keep_ckpts=1))
log_processor = dict(type='LogProcessor', window_size=10, by_epoch=True)
env_cfg = dict(cudnn_benchmark=False)
custom_imports = dict(
    imports=['linattn_vision.mm.backbones', 'linattn_vision.mm.hooks'], allow_failed_imports=False)
custom_hooks = [dict(type='EvalProgressBarHook')]  # a progress bar over each evaluation
