# ImageNet-1k in the ImageFolder layout: data/imagenet/{train,val}/<wnid>/*.JPEG (any other ImageFolder works alike).
# Training: timm's RandomResizedCrop (bicubic), flip, RandAugment rand-m9-mstd0.5-inc1 (timm disables the 0.4 color
# jitter while RandAugment is on, as in the official runs) and random erasing 0.25 (per-pixel noise).
# Evaluation as the official scripts: resize both sides to input/0.875 (bicubic), center crop.
data_root = 'data/imagenet'
train_pipeline = dict(
    type='TimmTransform',
    is_training=True,
    input_size=224,
    interpolation='bicubic',
    auto_augment='rand-m9-mstd0.5-inc1',
    color_jitter=0.4,
    re_prob=0.25,
    re_mode='pixel',
    re_count=1)
test_pipeline = dict(
    type='TimmTransform', is_training=False, input_size=224, interpolation='bicubic', crop_pct=0.875,
    crop_mode='squash')

train_dataloader = dict(
    batch_size=128,  # a GPU
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    drop_last=True,  # mixup needs even batches
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='ImageFolderDataset', data_root=data_root, split='train', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=128,
    num_workers=8,
    persistent_workers=True,
    pin_memory=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='ImageFolderDataset', data_root=data_root, split='val', pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='TopKAccuracy', topk=(1, 5))
test_evaluator = val_evaluator
