# Agent-DeiT-S at 448x448 (from scratch) on ImageNet-1k with the official recipe:
# LeapLabTHU/Agent-Attention agent_transformer/cfgs/agent_deit_s_448.yaml
# 64 images a GPU on 8 GPUs; the lr follows the global batch (auto_scale_lr: 5e-4 per 512 images).
_base_ = [
    '../_base_/models/timm_classifier.py',
    '../_base_/datasets/imagenet.py',
    '../_base_/schedules/cls_swin_300e.py',
    '../_base_/cls_runtime.py',
]
model = dict(model_name='agent_deit_s_448', drop_path_rate=0.1)
train_dataloader = dict(batch_size=64, dataset=dict(pipeline=dict(input_size=448)))
# evaluation at 448 (resize to 448/0.875, center crop)
val_dataloader = dict(dataset=dict(pipeline=dict(input_size=448)))
test_dataloader = val_dataloader
