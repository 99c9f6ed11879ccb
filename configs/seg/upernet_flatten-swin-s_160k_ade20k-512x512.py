# UperNet, 160k iterations at 512x512, with a flatten-swin-s backbone on ADE20K (Swin's setting).
# The flatten-swin-t config at another size.
_base_ = './upernet_flatten-swin-t_160k_ade20k-512x512.py'
# official ImageNet-1k release of the backbone (or a timm / safetensors file of this toolkit)
pretrained = 'checkpoints/flatten_swin_s.pth'
model = dict(backbone=dict(arch='s', init_cfg=dict(checkpoint=pretrained)))
