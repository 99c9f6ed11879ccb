# Demo segmenter: Semantic FPN on a small Agent-PVT (same agent attention as Agent-PVT-T, fewer blocks, channels and
# agents), trained from scratch on the bundled demo ADE20K-layout data (tools/make_demo_data.py, 128x128 scenes).
# Run by tools/run_demo.sh; the data root comes from $LINATTN_DEMO_DATA (default data/demo).
_base_ = ['../_base_/models/fpn_seg.py', '../_base_/seg_runtime.py']

data_root = '{{$LINATTN_DEMO_DATA:data/demo}}/ade/ADEChallengeData2016'
# linattn_vision.data.DEMO_SEG_CLASSES / DEMO_SEG_PALETTE (tests/tools/test_demo.py keeps them equal)
metainfo = dict(
    classes=('background', 'ellipse', 'rectangle', 'triangle', 'star', 'ring', 'cross'),
    palette=[(120, 120, 120), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
             (145, 30, 180)])
image_size = 128
crop_size = (image_size, image_size)
# GroupNorm in the neck and head (the base's SyncBN needs a process group): from scratch it learns faster here
norm_cfg = dict(type='GN', num_groups=16, requires_grad=True)

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        type='AgentPVT',
        arch='t',
        img_size=image_size,
        drop_path_rate=0.0,
        out_norm=dict(type='LN'),  # keeps the from-scratch features at unit scale for the fresh FPN
        # stage grids at 128 px are 32, 16, 8 and 4 tokens a side: fewer agents than Agent-PVT-T's 9-16-49-49
        model_kwargs=dict(embed_dims=(32, 64, 128, 192), depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 6),
                          mlp_ratios=(4, 4, 4, 4), stage_attn_kwargs=[dict(agent_num=n) for n in (9, 16, 16, 16)])),
    neck=dict(in_channels=[32, 64, 128, 192], out_channels=64, norm_cfg=norm_cfg),
    decode_head=dict(in_channels=[64, 64, 64, 64], channels=64, num_classes=7, norm_cfg=norm_cfg))

backend_args = None
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=crop_size, ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.9),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
dataset = dict(
    type='BaseSegDataset',  # ADE20KDataset with its own 150 class names; the demo has its own classes
    data_root=data_root,
    metainfo=metainfo,
    img_suffix='.jpg',
    seg_map_suffix='.png',
    reduce_zero_label=True)
train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        **dataset,
        data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        **dataset,
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

# from scratch: AdamW at a high lr (4e-3: +2 mIoU over 2e-3 at every check here), short warm-up, poly decay;
# evaluated a few times for the metric curve
max_iters = 1000
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=250)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=4e-3, weight_decay=0.01),
                     clip_grad=dict(max_norm=10.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='PolyLR', eta_min=1e-5, power=0.9, by_epoch=False, begin=30, end=max_iters),
]
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook', interval=1))  # with --show-dir: every test image
log_processor = dict(by_epoch=False, window_size=10)
env_cfg = dict(cudnn_benchmark=False)
custom_imports = dict(
    imports=['linattn_vision.mm.backbones', 'linattn_vision.mm.hooks'], allow_failed_imports=False)
custom_hooks = [dict(type='EvalProgressBarHook')]  # a progress bar over each evaluation
del dataset  # a helper only; keep it out of the config
