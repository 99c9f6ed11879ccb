# FLatten-DeiT-T on ImageNet-1k. The FLatten release has no DeiT recipe; this is Agent-DeiT's
# (LeapLabTHU/Agent-Attention agent_transformer/cfgs/agent_deit_t.yaml).
# 512 images a GPU on 8 GPUs; the lr follows the global batch (auto_scale_lr: 5e-4 per 512 images).
_base_ = [
    '../_base_/models/timm_classifier.py',
    '../_base_/datasets/imagenet.py',
    '../_base_/schedules/cls_swin_300e.py',
    '../_base_/cls_runtime.py',
]
model = dict(model_name='flatten_deit_t', drop_path_rate=0.0)
train_dataloader = dict(batch_size=512)
