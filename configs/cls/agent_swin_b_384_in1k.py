# Agent-Swin-B fine-tuned at 384x384 from the 224 model on ImageNet-1k with the official recipe:
# LeapLabTHU/Agent-Attention agent_transformer/cfgs/agent_swin_b_384.yaml
# 32 images a GPU on 8 GPUs; the lr follows the global batch (auto_scale_lr: 5e-4 per 512 images).
_base_ = [
    '../_base_/models/timm_classifier.py',
    '../_base_/datasets/imagenet.py',
    '../_base_/schedules/cls_swin_300e.py',
    '../_base_/cls_runtime.py',
]
# the 224x224 ImageNet-1k model to start from: an official release or a checkpoint of configs/cls
pretrained = 'checkpoints/agent_swin_b.pth'
model = dict(model_name='agent_swin_b_384', drop_path_rate=0.5, pretrained=pretrained)
train_dataloader = dict(batch_size=32, dataset=dict(pipeline=dict(input_size=384)))
# evaluation at 384 (official TEST.CROP False: resize to the input size, no crop)
val_dataloader = dict(dataset=dict(pipeline=dict(input_size=384, crop_pct=1.0)))
test_dataloader = val_dataloader
# fine-tuning: 30 epochs, 5 of warm-up from 2e-8, cosine to 2e-7, lr 2e-5 per 512 images, weight decay 1e-8
optim_wrapper = dict(optimizer=dict(lr=2e-5, weight_decay=1e-8))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=5, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min_ratio=1e-2, by_epoch=True, begin=5, end=30, T_max=25,
         convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=30)
