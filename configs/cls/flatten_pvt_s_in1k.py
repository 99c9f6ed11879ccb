# FLatten-PVT-S on ImageNet-1k with the official recipe:
# LeapLabTHU/FLatten-Transformer cfgs/flatten_pvt_s.yaml
# 64 images a GPU on 8 GPUs; the lr follows the global batch (auto_scale_lr: 5e-4 per 512 images).
_base_ = [
    '../_base_/models/timm_classifier.py',
    '../_base_/datasets/imagenet.py',
    '../_base_/schedules/cls_pvt_300e.py',
    '../_base_/cls_runtime.py',
]
model = dict(model_name='flatten_pvt_s', drop_path_rate=0.1)
train_dataloader = dict(batch_size=64)
# the official runs use --find-unused-params (DDP)
find_unused_parameters = True
