# Semantic FPN, 80k iterations at 512x512, with an agent-pvt-t backbone on ADE20K (PVT's setting).
# The flatten-pvt-t config with another attention.
_base_ = './fpn_flatten-pvt-t_80k_ade20k-512x512.py'
# official ImageNet-1k release of the backbone (or a timm / safetensors file of this toolkit)
pretrained = 'checkpoints/agent_pvt_t.pth'
# official downstream agent grids (Agent-Attention downstream configs '12-16-28-28'): more agents on the larger
# maps; the ImageNet agent biases are interpolated to these grids at run time (checkpoints load unchanged)
model = dict(
    backbone=dict(
        type='AgentPVT',
        init_cfg=dict(checkpoint=pretrained),
        model_kwargs=dict(downstream_agent_shapes=[(12, 12), (16, 16), (28, 28), (28, 28)])))
