# Agent-Swin-S at 288x288 (from scratch) on ImageNet-1k with the official recipe:
# LeapLabTHU/Agent-Attention agent_transformer/cfgs/agent_swin_s_288.yaml
# 64 images a GPU on 8 GPUs; the lr follows the global batch (auto_scale_lr: 5e-4 per 512 images).
_base_ = [
    '../_base_/models/timm_classifier.py',
    '../_base_/datasets/imagenet.py',
    '../_base_/schedules/cls_swin_300e.py',
    '../_base_/cls_runtime.py',
]
model = dict(model_name='agent_swin_s_288', drop_path_rate=0.3)
train_dataloader = dict(batch_size=64, dataset=dict(pipeline=dict(input_size=288)))
# evaluation at 288 (official TEST.CROP False: resize to the input size, no crop)
val_dataloader = dict(dataset=dict(pipeline=dict(input_size=288, crop_pct=1.0)))
test_dataloader = val_dataloader
