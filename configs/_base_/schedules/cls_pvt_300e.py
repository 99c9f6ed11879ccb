# The PVT recipe of the official FLatten / Agent PVT configs: AdamW, lr 5e-4 per 512 images (auto_scale_lr), weight
# decay 0.05 except norms, biases and no_weight_decay names; 5 epochs of linear warm-up from 1e-6, cosine to 1e-5 at
# epoch 300, then 10 cool-down epochs at 1e-5 (310 in all); no gradient clipping (the larger models set 1.0).
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=5e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05),
    constructor='NoDecayOptimWrapperConstructor')
param_scheduler = [
    dict(type='LinearLR', start_factor=2e-3, by_epoch=True, begin=0, end=5, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min_ratio=2e-2, by_epoch=True, begin=5, end=300, T_max=295,
         convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=310, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
auto_scale_lr = dict(enable=True, base_batch_size=512)
