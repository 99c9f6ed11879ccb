# 12 epochs, lr steps at 8 and 11, 500 iterations of linear warm-up. The optimizer itself is set per backbone family.
max_epochs = 12
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05))
# lr above is for batch 16 (8 GPUs x 2); --auto-scale-lr rescales it for other totals
auto_scale_lr = dict(enable=False, base_batch_size=16)
