# Mask R-CNN 1x (12 epochs) with an agent-pvt-t backbone on COCO.
# The flatten-pvt-t config with another attention.
_base_ = './mask-rcnn_flatten-pvt-t_fpn_1x_coco.py'
# official ImageNet-1k release of the backbone (or a timm / safetensors file of this toolkit)
pretrained = 'checkpoints/agent_pvt_t.pth'
model = dict(backbone=dict(type='AgentPVT', init_cfg=dict(checkpoint=pretrained)))
