# The Swin-style 300-epoch recipe that FLatten / Agent Swin and DeiT use: AdamW, lr 5e-4 per 512 images (rescaled to
# the global batch by auto_scale_lr, as the official linear scaling), weight decay 0.05 except norms, biases and the
# models' no_weight_decay names; 20 epochs of linear warm-up from 5e-7, cosine to 5e-6 (both scaled with the lr);
# gradient norm clipped at 5.0. The schedule steps every iteration.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=5e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05),
    clip_grad=dict(max_norm=5.0),
    constructor='NoDecayOptimWrapperConstructor')
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=20, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min_ratio=1e-2, by_epoch=True, begin=20, end=300, T_max=280,
         convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=300, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
auto_scale_lr = dict(enable=True, base_batch_size=512)
