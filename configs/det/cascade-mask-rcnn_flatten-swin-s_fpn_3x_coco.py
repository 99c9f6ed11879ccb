# Cascade Mask R-CNN 3x (multi-scale, 36 epochs; 4conv1fc GIoU box heads) with a flatten-swin-s backbone on COCO.
# The flatten-swin-t config at another size.
_base_ = './cascade-mask-rcnn_flatten-swin-t_fpn_3x_coco.py'
# official ImageNet-1k release of the backbone (or a timm / safetensors file of this toolkit)
pretrained = 'checkpoints/flatten_swin_s.pth'
model = dict(backbone=dict(arch='s', drop_path_rate=0.3, init_cfg=dict(checkpoint=pretrained)))
