# Agent-CSwin-B on ImageNet-1k with the official recipe:
# LeapLabTHU/Agent-Attention agent_transformer/cfgs/agent_cswin_b.yaml
# 64 images a GPU on 8 GPUs; the lr follows the global batch (auto_scale_lr: 5e-4 per 512 images).
_base_ = [
    '../_base_/models/timm_classifier.py',
    '../_base_/datasets/imagenet.py',
    '../_base_/schedules/cls_cswin_300e.py',
    '../_base_/cls_runtime.py',
]
model = dict(model_name='agent_cswin_b', drop_path_rate=0.5)
train_dataloader = dict(batch_size=64)
optim_wrapper = dict(optimizer=dict(weight_decay=0.1))
ema_decay = 0.99992
custom_hooks = [
    dict(type='EMAHook', ema_type='ExponentialMovingAverage', momentum=1 - ema_decay, update_buffers=True,
         priority='ABOVE_NORMAL')
]
