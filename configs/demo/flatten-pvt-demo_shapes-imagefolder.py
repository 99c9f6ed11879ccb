# Demo classifier: a small FLatten-PVT (same focused linear attention as FLatten-PVT-T, fewer blocks and channels,
# at 64x64 px), trained from scratch on the bundled demo ImageFolder split (tools/make_demo_data.py: one shape a
# 128x128 image, 6 classes). Run by tools/run_demo.sh; the data root comes from $LINATTN_DEMO_DATA (default data/demo).
_base_ = ['../_base_/cls_runtime.py']

data_root = '{{$LINATTN_DEMO_DATA:data/demo}}/imagenet'
image_size = 64

model = dict(
    type='TimmClassifier',
    model_name='flatten_pvt_t',
    num_classes=6,
    label_smoothing=0.1,
    img_size=image_size,
    embed_dims=(32, 64, 128, 192),
    depths=(1, 1, 1, 1),
    num_heads=(1, 2, 4, 6),
    mlp_ratios=(4, 4, 4, 4),
    drop_path_rate=0.0)

# mild augmentation: RandomResizedCrop keeps most of the shape (its outline is the class), flips, no colour jitter
train_pipeline = dict(
    type='TimmTransform', is_training=True, input_size=image_size, scale=(0.7, 1.0), interpolation='bilinear',
    hflip=0.5, vflip=0.5, color_jitter=0.0)
test_pipeline = dict(
    type='TimmTransform', is_training=False, input_size=image_size, interpolation='bilinear', crop_pct=1.0,
    crop_mode='squash')
train_dataloader = dict(
    batch_size=16,
    num_workers=1,
    persistent_workers=True,
    drop_last=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='ImageFolderDataset', data_root=data_root, split='train', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=32,
    num_workers=1,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='ImageFolderDataset', data_root=data_root, split='val', pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='TopKAccuracy', topk=(1, 2))
test_evaluator = val_evaluator

# from scratch: AdamW (1e-3: 2e-3 learns slower here), 3 warm-up epochs, cosine decay; validated a few times for the
# metric curve
max_epochs = 30
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=10)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
    constructor='NoDecayOptimWrapperConstructor',
    clip_grad=dict(max_norm=5.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=3, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=max_epochs - 3, eta_min_ratio=0.01, by_epoch=True, begin=3,
         end=max_epochs, convert_to_iter_based=True),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=5),
    checkpoint=dict(type='CheckpointHook', interval=max_epochs, max_keep_ckpts=1, save_best=None))
log_processor = dict(type='LogProcessor', window_size=5, by_epoch=True)
env_cfg = dict(cudnn_benchmark=False)
custom_imports = dict(
    imports=['linattn_vision.mm.classification', 'linattn_vision.mm.hooks'], allow_failed_imports=False)
custom_hooks = [dict(type='EvalProgressBarHook')]  # a progress bar over each evaluation
randomness = dict(seed=0, diff_rank_seed=False)
