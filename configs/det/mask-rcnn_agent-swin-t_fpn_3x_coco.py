# Mask R-CNN 3x (multi-scale, 36 epochs) with an agent-swin-t backbone on COCO.
# The flatten-swin-t config with another attention.
_base_ = './mask-rcnn_flatten-swin-t_fpn_3x_coco.py'
# official ImageNet-1k release of the backbone (or a timm / safetensors file of this toolkit)
pretrained = 'checkpoints/agent_swin_t.pth'
# official downstream agent grids (Agent-Attention downstream configs '9-12-14-7'): more agents on the larger
# maps; the ImageNet agent biases are interpolated to these grids at run time (checkpoints load unchanged)
model = dict(
    backbone=dict(
        type='AgentSwin',
        init_cfg=dict(checkpoint=pretrained),
        model_kwargs=dict(downstream_agent_shapes=[(9, 9), (12, 12), (14, 14), (7, 7)])))
# no weight decay on the agent biases either
optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys={
            'an_bias': dict(decay_mult=0.),
            'na_bias': dict(decay_mult=0.),
            'ah_bias': dict(decay_mult=0.),
            'aw_bias': dict(decay_mult=0.),
            'ha_bias': dict(decay_mult=0.),
            'wa_bias': dict(decay_mult=0.),
        }))
