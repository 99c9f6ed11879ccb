# Agent-CSwin-B fine-tuned at 384x384 from the 224 model on ImageNet-1k with the official recipe:
# LeapLabTHU/Agent-Attention agent_transformer/cfgs/agent_cswin_b_384.yaml
# 32 images a GPU on 8 GPUs; the lr follows the global batch (auto_scale_lr: 5e-4 per 512 images).
_base_ = [
    '../_base_/models/timm_classifier.py',
    '../_base_/datasets/imagenet.py',
    '../_base_/schedules/cls_cswin_300e.py',
    '../_base_/cls_runtime.py',
]
# the 224x224 ImageNet-1k model to start from: an official release or a checkpoint of configs/cls
pretrained = 'checkpoints/agent_cswin_b.pth'
model = dict(model_name='agent_cswin_b_384', drop_path_rate=0.7, pretrained=pretrained)
train_dataloader = dict(batch_size=32, dataset=dict(pipeline=dict(input_size=384)))
# evaluation at 384 (resize to 384/0.875, center crop)
val_dataloader = dict(dataset=dict(pipeline=dict(input_size=384)))
test_dataloader = val_dataloader
# fine-tuning: 20 epochs cosine from 5e-6 to 5e-7 per 512 images (no warm-up), then 10 epochs at 5e-7;
# weight decay 1e-8
optim_wrapper = dict(optimizer=dict(lr=5e-6, weight_decay=1e-8))
param_scheduler = [
    dict(type='CosineAnnealingLR', eta_min_ratio=0.1, by_epoch=True, begin=0, end=20, T_max=20,
         convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=30)
ema_decay = 0.9998
custom_hooks = [
    dict(type='EMAHook', ema_type='ExponentialMovingAverage', momentum=1 - ema_decay, update_buffers=True,
         priority='ABOVE_NORMAL')
]
