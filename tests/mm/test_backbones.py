"""OpenMMLab backbones over the timm models: features, registry, freezing, checkpoint loading."""
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.mm

REPO = Path(__file__).resolve().parents[2]

from linattn_vision.checkpoint import CheckpointError
from linattn_vision.mm import backbones
from linattn_vision.mm.errors import UnknownBackboneError
from official_layout import save_official_checkpoint  # tests/official_layout.py

# small variants: one block a stage, narrow stages (heads divide the widths)
TINY_PVT = dict(depths=(1, 1, 1, 1), embed_dims=(16, 32, 40, 64))
TINY_SWIN = dict(depths=(1, 1, 1, 1), embed_dim=16, num_heads=(1, 2, 4, 8))
TINY_CSWIN = dict(depth=(1, 1, 1, 1), embed_dim=16, num_heads=(2, 2, 4, 8))
TINY = {  # type: (arch, model kwargs)
    'FLattenPVT': ('t', TINY_PVT),
    'AgentPVT': ('t', TINY_PVT),
    'FLattenPVTv2': ('b0', dict(depths=(1, 1, 1, 1), embed_dims=(16, 32, 40, 64))),
    'FLattenSwin': ('t', TINY_SWIN),
    'AgentSwin': ('t', TINY_SWIN),
    'FLattenCSWin': ('t', TINY_CSWIN),
    'AgentCSWin': ('t', TINY_CSWIN),
}


def build(type_name, **kwargs):
    from mmengine.registry import MODELS
    return MODELS.build(dict(type=type_name, **kwargs))


@pytest.mark.parametrize('type_name', sorted(TINY))
def test_nchw_features_at_any_input_size(type_name):
    arch, kwargs = TINY[type_name]
    model = build(type_name, arch=arch, model_kwargs=kwargs).eval()
    # detection-like input: no multiple of any window or of the 224 the position tables are defined for
    x = torch.randn(2, 3, 100, 164)
    with torch.no_grad():
        feats = model(x)
    assert isinstance(feats, tuple) and len(feats) == 4
    for feat, channels, stride in zip(feats, model.out_channels, model.out_strides):
        assert feat.shape[:2] == (2, channels)
        # conv patch embeddings floor odd sizes (PVT), padding ones round up (Swin, CSWin)
        assert feat.shape[2] in (100 // stride, -(-100 // stride))
        assert feat.shape[3] in (164 // stride, -(-164 // stride))
        assert torch.isfinite(feat).all()
    assert model.out_strides == [4, 8, 16, 32]
    # position parameters are resized on the fly for the live grid, never re-initialised or overwritten
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


@pytest.mark.parametrize('type_name', ['AgentPVT', 'FLattenSwin', 'AgentSwin'])
def test_position_parameters_train_at_detection_sizes(type_name):
    """At another input size the resized position tables / agent biases still get gradients, step after step
    (a cached resize must not cut them off)."""
    arch, kwargs = TINY[type_name]
    model = build(type_name, arch=arch, model_kwargs=kwargs).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    position = [n for n, _ in model.named_parameters()
                if n.rsplit('.', 1)[-1] in ('pos_embed1', 'positional_encoding', 'an_bias', 'ah_bias')]
    assert position
    for _ in range(2):
        optimizer.zero_grad()
        sum((f * torch.randn_like(f)).sum() for f in model(torch.randn(2, 3, 96, 128))).backward()
        grads = dict(model.named_parameters())
        assert all(grads[n].grad is not None and grads[n].grad.abs().sum() > 0 for n in position)
        optimizer.step()


def test_out_indices_select_and_norm_outputs():
    # timm's own Swin through the generic wrapper
    model = build('LinAttnBackbone', model_name='swin_tiny_patch4_window7_224', out_indices=(1, 3),
                  model_kwargs=dict(depths=(1, 1, 1, 1), embed_dim=32, num_heads=(1, 2, 4, 8), strict_img_size=False))
    assert not hasattr(model, 'norm0') and isinstance(model.norm1, backbones.ChannelLayerNorm)
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 64, 96))
    assert [f.shape for f in feats] == [(1, 64, 8, 12), (1, 256, 2, 3)]
    # the per-output LayerNorm normalises over channels at every position
    assert feats[0].mean(1).abs().max() < 1e-4
    # pruned: no unused classifier / final-norm parameters (DDP would reject them)
    assert not any(n.startswith(('model.head', 'model.norm.')) and p.requires_grad and p.numel()
                   for n, p in model.named_parameters())


def test_registered_once_and_visible_to_mmdet_and_mmseg():
    from mmdet.registry import MODELS as DET_MODELS
    from mmengine.registry import MODELS
    from mmseg.registry import MODELS as SEG_MODELS
    for name in ('FLattenSwin', 'FLattenPVT', 'FLattenPVTv2', 'FLattenCSWin', 'AgentSwin', 'AgentPVT', 'AgentCSWin'):
        assert MODELS.get(name) is getattr(backbones, name)
        assert name not in DET_MODELS.module_dict and name not in SEG_MODELS.module_dict  # no clash with theirs
    for registry in (DET_MODELS, SEG_MODELS):
        model = registry.build(dict(type='AgentPVT', arch='t', model_kwargs=TINY_PVT))
        assert isinstance(model, backbones.AgentPVT)


def test_unknown_arch_and_model_name_name_the_problem():
    with pytest.raises(UnknownBackboneError, match=r"unknown arch 'q'.*known archs: .*\bt\b"):
        backbones.AgentPVT(arch='q')
    with pytest.raises(UnknownBackboneError, match="unknown timm model 'flatten_nope'"):
        backbones.LinAttnBackbone('flatten_nope')


def test_frozen_stages_and_norm_eval():
    model = backbones.AgentPVT(arch='t', model_kwargs=TINY_PVT, frozen_stages=1, out_norm=dict(type='BN'),
                               norm_eval=True)
    model.train()
    grad = {n: p.requires_grad for n, p in model.named_parameters()}
    # stem + stage 0 (PVT's patch_embed1, pos_embed1, block1) frozen; stage 1 and its patch embedding train
    assert not grad['model.pos_embed1'] and not grad['model.patch_embed1.proj.weight']
    assert not any(v for n, v in grad.items() if n.startswith(('model.block1.', 'norm0.')))
    assert grad['model.pos_embed2'] and grad['model.patch_embed2.proj.weight'] and grad['norm1.weight']
    assert all(v for n, v in grad.items() if n.startswith('model.block2.'))
    assert not model.model.block1.training and model.model.block2.training
    # norm_eval: BatchNorm keeps its running statistics in training mode
    assert not model.norm2.training
    before = model.norm2.running_mean.clone()
    model(torch.randn(2, 3, 64, 64))
    assert torch.equal(model.norm2.running_mean, before)


@pytest.mark.parametrize('type_name', sorted(TINY))
def test_frozen_stages_and_with_cp_in_every_family(type_name):
    arch, kwargs = TINY[type_name]
    model = build(type_name, arch=arch, model_kwargs=kwargs, frozen_stages=2, with_cp=True).train()
    # a random projection: plain means of layer-normalised outputs carry (almost) no gradient
    sum((f * torch.randn_like(f)).sum() for f in model(torch.randn(1, 3, 64, 64))).backward()
    stage_params = {i: [p for n, p in model.model.named_parameters() if model._stage_of(n) == i] for i in range(4)}
    stem = [p for n, p in model.model.named_parameters() if model._stage_of(n) is None]
    assert stem and all(not p.requires_grad and p.grad is None for p in stem)  # patch embedding and the like
    for i in (0, 1):
        assert stage_params[i] and all(not p.requires_grad and p.grad is None for p in stage_params[i])
    for i in (2, 3):
        assert stage_params[i] and all(p.requires_grad for p in stage_params[i])
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in stage_params[i])
    assert not model.model.get_submodule(model.stage_modules[1]).training
    assert model.model.get_submodule(model.stage_modules[2]).training


def test_with_cp_same_gradients():
    torch.manual_seed(0)
    plain = backbones.FLattenPVT(arch='t', model_kwargs=TINY_PVT)
    ckpt = backbones.FLattenPVT(arch='t', model_kwargs=TINY_PVT, with_cp=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 64, 64)
    for model in (plain, ckpt):
        sum(f.square().sum() for f in model(x)).backward()
    grads_plain = {n: p.grad for n, p in plain.named_parameters() if p.grad is not None}
    grads_cp = {n: p.grad for n, p in ckpt.named_parameters() if p.grad is not None}
    assert grads_plain.keys() == grads_cp.keys() and len(grads_plain) > 10
    for n in grads_plain:
        torch.testing.assert_close(grads_cp[n], grads_plain[n], rtol=1e-4, atol=1e-6)


def test_official_imagenet_file_loads_with_zero_missing_keys(tmp_path):
    import timm
    classifier = timm.create_model('agent_pvt_t', num_classes=1000, **TINY_PVT)
    path = tmp_path / 'agent_pvt_t.pth'
    save_official_checkpoint(path, classifier.state_dict())

    model = backbones.AgentPVT(arch='t', model_kwargs=TINY_PVT, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    report = backbones.load_backbone_checkpoint(model, str(path))
    assert report['missing'] == [] and report['unexpected'] == []
    assert set(report['skipped']) == {'head.weight', 'head.bias'}
    model.init_weights()  # the mmengine entry point loads the same way
    for name, value in classifier.state_dict().items():
        if not name.startswith('head.'):
            assert torch.equal(model.model.state_dict()[name], value), name


@pytest.mark.parametrize('type_name', sorted(TINY))
def test_official_file_transfers_in_every_family(type_name, tmp_path):
    """Each family's official-layout ImageNet file (classifier keys, 224 position tables) loads with no key missing."""
    import timm
    arch, kwargs = TINY[type_name]
    backbone = build(type_name, arch=arch, model_kwargs=kwargs)
    classifier = timm.create_model(backbone.model_name, num_classes=1000, **kwargs)
    path = save_official_checkpoint(tmp_path / 'official.pth', classifier.state_dict())
    report = backbones.load_backbone_checkpoint(backbone, str(path))
    assert report['missing'] == [] and report['unexpected'] == []
    assert report['skipped'] and all(k.startswith(('head.', 'norm.')) for k in report['skipped'])
    reference = classifier.state_dict()
    for name, value in backbone.model.state_dict().items():
        assert torch.equal(value, reference[name]), name


def test_pretrained_argument_as_mmseg_passes_it(tmp_path):
    import timm
    path = tmp_path / 'agent_pvt_t.pth'
    torch.save(timm.create_model('agent_pvt_t', **TINY_PVT).state_dict(), path)
    model = backbones.AgentPVT(arch='t', model_kwargs=TINY_PVT, pretrained=str(path))
    assert model.init_cfg == dict(type='Pretrained', checkpoint=str(path))
    model.init_weights()
    assert torch.equal(model.model.pos_embed1, torch.load(path)['pos_embed1'])


def test_mmengine_detector_checkpoint_loads_backbone_part(tmp_path):
    source = backbones.AgentPVT(arch='t', model_kwargs=TINY_PVT, out_norm=dict(type='LN'))
    state = {f'backbone.{k}': v for k, v in source.state_dict().items()}
    state['neck.lateral_convs.0.conv.weight'] = torch.zeros(4, 4, 1, 1)
    path = tmp_path / 'epoch_12.pth'
    torch.save({'meta': {'epoch': 12}, 'state_dict': state}, path)
    model = backbones.AgentPVT(arch='t', model_kwargs=TINY_PVT, out_norm=dict(type='LN'),
                               init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    for name, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name


def test_checkpoint_that_does_not_fit_names_keys(tmp_path):
    import timm
    other = timm.create_model('flatten_pvt_t', num_classes=1000, **TINY_PVT).state_dict()
    path = tmp_path / 'wrong.pth'
    torch.save({'model': other}, path)
    model = backbones.AgentPVT(arch='t', model_kwargs=TINY_PVT)
    with pytest.raises(CheckpointError, match=r'wrong\.pth|agent_pvt_t') as info:
        backbones.load_backbone_checkpoint(model, str(path))
    message = str(info.value)
    assert '\n' not in message and ('missing keys' in message or 'unexpected keys' in message)
    assert 'block' in message  # names real keys

    shrunk = dict(timm.create_model('agent_pvt_t', **TINY_PVT).state_dict())
    shrunk['block1.0.mlp.fc1.weight'] = shrunk['block1.0.mlp.fc1.weight'][:3]
    torch.save(shrunk, path)
    with pytest.raises(CheckpointError, match=r'block1\.0\.mlp\.fc1\.weight'):
        backbones.load_backbone_checkpoint(model, str(path))


def test_official_checkpoint_transfers_into_detector_backbone(tmp_path):
    """The shipped Mask R-CNN config, its backbone initialised from an official-layout ImageNet file."""
    import timm
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope

    classifier = timm.create_model('flatten_pvt_t', num_classes=1000, **TINY_PVT)
    path = tmp_path / 'flatten_pvt_t.pth'
    save_official_checkpoint(path, classifier.state_dict())
    cfg = Config.fromfile(REPO / 'configs/det/mask-rcnn_flatten-pvt-t_fpn_1x_coco.py')
    cfg.model.backbone.update(model_kwargs=TINY_PVT, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    cfg.model.neck.in_channels = list(TINY_PVT['embed_dims'])
    init_default_scope('mmdet')
    detector = MODELS.build(cfg.model)
    detector.init_weights()
    loaded = detector.backbone.model.state_dict()
    backbone_keys = [k for k in classifier.state_dict() if not k.startswith(('head.', 'norm.'))]
    assert sorted(loaded) == sorted(backbone_keys)  # zero missing backbone keys
    for name in backbone_keys:
        assert torch.equal(loaded[name], classifier.state_dict()[name]), name
    report = backbones.load_backbone_checkpoint(detector.backbone, str(path))
    assert report['missing'] == [] and report['unexpected'] == []
