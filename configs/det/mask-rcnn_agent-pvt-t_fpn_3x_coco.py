# Mask R-CNN 3x (multi-scale, 36 epochs) with an agent-pvt-t backbone on COCO.
# The flatten-pvt-t config with another attention.
_base_ = './mask-rcnn_flatten-pvt-t_fpn_3x_coco.py'
# official ImageNet-1k release of the backbone (or a timm / safetensors file of this toolkit)
pretrained = 'checkpoints/agent_pvt_t.pth'
# official downstream agent grids (Agent-Attention downstream configs '12-16-28-28'): more agents on the larger
# maps; the ImageNet agent biases are interpolated to these grids at run time (checkpoints load unchanged)
model = dict(
    backbone=dict(
        type='AgentPVT',
        init_cfg=dict(checkpoint=pretrained),
        model_kwargs=dict(downstream_agent_shapes=[(12, 12), (16, 16), (28, 28), (28, 28)])))
