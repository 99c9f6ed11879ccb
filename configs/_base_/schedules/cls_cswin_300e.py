# The CSwin recipe of the official FLatten / Agent CSwin configs: AdamW, lr 5e-4 per 512 images (auto_scale_lr),
# weight decay 0.05 except norms, biases and no_weight_decay names; 20 epochs of linear warm-up from 1e-6, cosine to
# 1e-5 at epoch 300, then 10 cool-down epochs at 1e-5 (310 in all); no gradient clipping; an EMA of the weights
# (decay set per model, mmengine momentum = 1 - decay) is what validation and the checkpoints' state_dict hold.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=5e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05),
    constructor='NoDecayOptimWrapperConstructor')
param_scheduler = [
    dict(type='LinearLR', start_factor=2e-3, by_epoch=True, begin=0, end=20, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min_ratio=2e-2, by_epoch=True, begin=20, end=300, T_max=280,
         convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=310, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
auto_scale_lr = dict(enable=True, base_batch_size=512)
ema_decay = 0.99984
custom_hooks = [
    dict(type='EMAHook', ema_type='ExponentialMovingAverage', momentum=1 - ema_decay, update_buffers=True,
         priority='ABOVE_NORMAL')
]
