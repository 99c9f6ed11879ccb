# mmengine runtime shared by configs/cls: ImageNet classification needs only mmengine + timm (no mmcv/mmdet/mmseg)
default_scope = 'linattn_vision'
custom_imports = dict(imports=['linattn_vision.mm.classification'], allow_failed_imports=False)

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=100),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # every epoch, as the official scripts; the best top-1 is kept as best_accuracy_top1_epoch_*.pth
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=2, save_best='accuracy/top1', rule='greater'),
    sampler_seed=dict(type='DistSamplerSeedHook'))
env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='Visualizer', vis_backends=vis_backends)
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=True)
log_level = 'INFO'
load_from = None
resume = False
# the official scripts seed each rank with seed + rank: augmentations differ across GPUs
randomness = dict(seed=0, diff_rank_seed=True)
