# Agent-Swin-T on ImageNet-1k with the official recipe:
# LeapLabTHU/Agent-Attention agent_transformer/cfgs/agent_swin_t.yaml
# 128 images a GPU on 8 GPUs; the lr follows the global batch (auto_scale_lr: 5e-4 per 512 images).
_base_ = [
    '../_base_/models/timm_classifier.py',
    '../_base_/datasets/imagenet.py',
    '../_base_/schedules/cls_swin_300e.py',
    '../_base_/cls_runtime.py',
]
model = dict(model_name='agent_swin_t', drop_path_rate=0.2)
train_dataloader = dict(batch_size=128)
