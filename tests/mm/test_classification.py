"""ImageNet classification pieces on mmengine: mixup / cutmix + soft targets, no-decay groups, metric, data, configs."""
import collections
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

pytest.importorskip('mmengine', reason='the mm extra (mmengine) is part of this project\'s test environment')

from linattn_vision.checkpoint import CheckpointError  # noqa: E402
from linattn_vision.mm.checkpoint import load_trusted_checkpoint, trusted_checkpoint_loading  # noqa: E402
from linattn_vision.mm.classification import (ImageFolderDataset, NoDecayOptimWrapperConstructor,  # noqa: E402
                                              TimmClassifier, TimmTransform, TopKAccuracy,
                                              load_classifier_checkpoint, param_groups_no_decay,
                                              soft_target_cross_entropy)
from linattn_vision.mm.errors import DataRootError  # noqa: E402
from official_layout import save_official_checkpoint  # noqa: E402

pytestmark = pytest.mark.mm
REPO = Path(__file__).resolve().parents[2]
NUM_CLASSES = 5


def tiny_classifier(**kwargs):
    return TimmClassifier('test_vit', num_classes=NUM_CLASSES, img_size=32, **kwargs)


def smoothed_one_hot(labels, smoothing, num_classes=NUM_CLASSES):
    off = smoothing / num_classes
    return F.one_hot(labels, num_classes).float() * (1 - smoothing) + off


# ---------------------------------------------------------------- mixup / cutmix and the soft-target loss


def test_soft_target_cross_entropy_is_cross_entropy_against_a_distribution():
    logits = torch.randn(6, NUM_CLASSES)
    target = torch.rand(6, NUM_CLASSES).softmax(-1)
    expected = -(target * logits.log_softmax(-1)).sum(-1).mean()
    assert torch.allclose(soft_target_cross_entropy(logits, target), expected, atol=1e-6)
    assert torch.allclose(soft_target_cross_entropy(logits, target), F.cross_entropy(logits, target), atol=1e-6)


def _record_net_io(classifier):
    seen = {}

    def hook(module, args, output):
        seen['inputs'], seen['logits'] = args[0].detach().clone(), output.detach().clone()
    classifier.model.register_forward_hook(hook)
    return seen


def test_mixup_loss_mixes_images_and_label_smoothed_targets():
    classifier = tiny_classifier(mixup=dict(mixup_alpha=0.8, cutmix_alpha=0.0), label_smoothing=0.1)
    seen = _record_net_io(classifier)
    x = torch.randn(4, 3, 32, 32)
    y = torch.tensor([0, 1, 2, 3])
    loss = classifier(x.clone(), y, mode='loss')['loss']  # timm mixes the batch in place

    mixed, flipped = seen['inputs'], x.flip(0)
    # the net saw lam * x + (1 - lam) * x.flip(0) for one lam of the batch
    d = (x - flipped).flatten()
    lam = float(((mixed - flipped).flatten() @ d) / (d @ d))
    assert 0.0 < lam < 1.0
    assert torch.allclose(mixed, lam * x + (1 - lam) * flipped, atol=1e-5)
    target = lam * smoothed_one_hot(y, 0.1) + (1 - lam) * smoothed_one_hot(y.flip(0), 0.1)
    assert torch.allclose(loss, soft_target_cross_entropy(seen['logits'], target), atol=1e-5)


def test_cutmix_pastes_a_box_and_weights_targets_by_its_area():
    classifier = tiny_classifier(mixup=dict(mixup_alpha=0.0, cutmix_alpha=1.0), label_smoothing=0.0)
    x = torch.arange(4.0)[:, None, None, None].expand(4, 3, 32, 32).clone() + 1  # image i is all i+1
    y = torch.tensor([0, 1, 2, 3])
    for _ in range(5):  # several boxes; a box of zero area leaves lam = 1
        mixed, target = classifier.mixup(x.clone(), y)
        from_flipped = mixed[:, 0] == x.flip(0)[:, 0]
        assert torch.all((mixed[:, 0] == x[:, 0]) | from_flipped)
        rows, cols = from_flipped[0].any(1).nonzero(), from_flipped[0].any(0).nonzero()
        if len(rows):  # one axis-aligned rectangle, the same for every image of the batch
            box = torch.zeros(32, 32, dtype=torch.bool)
            box[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
            assert torch.equal(from_flipped[0], box)
            assert torch.equal(from_flipped, box.expand(4, 32, 32))
        lam = 1 - from_flipped[0].float().mean()
        expected = lam * F.one_hot(y, NUM_CLASSES) + (1 - lam) * F.one_hot(y.flip(0), NUM_CLASSES)
        assert torch.allclose(target, expected.float(), atol=1e-6)


def test_without_mixup_the_loss_is_label_smoothed_cross_entropy():
    classifier = tiny_classifier(label_smoothing=0.1)
    seen = _record_net_io(classifier)
    y = torch.tensor([4, 0, 2])
    loss = classifier(torch.randn(3, 3, 32, 32), y, mode='loss')['loss']
    assert torch.allclose(loss, soft_target_cross_entropy(seen['logits'], smoothed_one_hot(y, 0.1)), atol=1e-5)


def test_predict_returns_scores_and_labels_per_sample():
    classifier = tiny_classifier().eval()
    out = classifier(torch.randn(3, 3, 32, 32), torch.tensor([1, 2, 3]), mode='predict')
    assert [o['gt_label'] for o in out] == [1, 2, 3]
    for o in out:
        assert o['pred_score'].shape == (NUM_CLASSES,)
        assert torch.isclose(o['pred_score'].sum(), torch.tensor(1.0))
        assert o['pred_label'] == int(o['pred_score'].argmax())


def test_unknown_model_name_is_one_clear_error():
    with pytest.raises(KeyError, match="unknown timm model 'flaten_swin_t'"):
        TimmClassifier('flaten_swin_t')


def test_init_weights_keeps_timm_init():
    classifier = tiny_classifier()
    before = {k: v.clone() for k, v in classifier.state_dict().items()}
    classifier.init_weights()  # timm's VisionTransformer has an init_weights of its own: it must not run again
    assert all(torch.equal(before[k], v) for k, v in classifier.state_dict().items())


# ---------------------------------------------------------------- weight decay groups


class WithKeywords(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(9, 2))

    def no_weight_decay_keywords(self):
        return {'relative_position_bias_table'}


def test_no_weight_decay_groups_norms_biases_and_model_names():
    classifier = tiny_classifier()
    classifier.extra = WithKeywords()
    decay, no_decay = param_groups_no_decay(classifier, weight_decay=0.05)
    assert decay['weight_decay'] == 0.05 and no_decay['weight_decay'] == 0.0
    names = {id(p): n for n, p in classifier.named_parameters()}
    decay_names = {names[id(p)] for p in decay['params']}
    no_decay_names = {names[id(p)] for p in no_decay['params']}
    assert decay_names.isdisjoint(no_decay_names)
    assert decay_names | no_decay_names == set(names.values())
    # the model's no_weight_decay() names (2-D / 3-D tensors, decayed by shape alone)
    assert {'model.pos_embed', 'model.cls_token'} <= no_decay_names
    assert 'extra.relative_position_bias_table' in no_decay_names  # no_weight_decay_keywords()
    assert 'model.blocks.0.norm1.weight' in no_decay_names and 'model.norm.weight' in no_decay_names
    assert 'model.blocks.0.attn.qkv.bias' in no_decay_names and 'model.head.bias' in no_decay_names
    assert {'model.blocks.0.attn.qkv.weight', 'model.patch_embed.proj.weight', 'model.head.weight',
            'extra.proj.weight'} <= decay_names
    assert all(p.ndim >= 2 for p in decay['params'])


def test_constructor_builds_adamw_with_the_two_groups():
    classifier = tiny_classifier()
    classifier.model.cls_token.requires_grad_(False)  # frozen parameters stay out of the optimizer
    constructor = NoDecayOptimWrapperConstructor(
        dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
             clip_grad=dict(max_norm=5.0)),
        paramwise_cfg=dict(no_decay_keywords=['head.weight']))
    wrapper = constructor(classifier)
    optimizer = wrapper.optimizer
    assert isinstance(optimizer, torch.optim.AdamW)
    assert [g['weight_decay'] for g in optimizer.param_groups] == [0.05, 0.0]
    assert all(g['lr'] == 1e-3 for g in optimizer.param_groups)
    assert wrapper.clip_grad_kwargs == dict(max_norm=5.0)
    in_groups = {id(p) for g in optimizer.param_groups for p in g['params']}
    assert id(classifier.model.cls_token) not in in_groups
    assert id(classifier.model.head.weight) in {id(p) for p in optimizer.param_groups[1]['params']}
    with pytest.raises(ValueError, match='bias_decay_mult'):
        NoDecayOptimWrapperConstructor(dict(optimizer=dict(type='AdamW')), paramwise_cfg=dict(bias_decay_mult=0))


# ---------------------------------------------------------------- metric


def test_topk_accuracy_counts_ranks():
    metric = TopKAccuracy(topk=(1, 5))
    scores = torch.arange(10.0).flip(0)  # class 0 ranked first, class 9 last
    samples = [dict(pred_score=scores, gt_label=g) for g in (0, 1, 4, 7)]  # ranks 0, 1, 4, 7
    metric.process({}, samples)
    assert metric.evaluate(len(samples)) == {'accuracy/top1': 25.0, 'accuracy/top5': 75.0}
    metric = TopKAccuracy(topk=(1, 5))  # fewer classes than k: top-5 of 3 classes is always right
    metric.process({}, [dict(pred_score=torch.tensor([0.2, 0.5, 0.3]), gt_label=0)])
    assert metric.evaluate(1) == {'accuracy/top1': 0.0, 'accuracy/top5': 100.0}


# ---------------------------------------------------------------- data


def write_folder(root, split='train', classes=('n01', 'n02'), per_class=2, size=40):
    rng = np.random.default_rng(0)
    for name in classes:
        folder = root / split / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 255, (size, size + 8, 3), dtype=np.uint8)).save(folder / f'{i}.JPEG')
    return root


def test_image_folder_labels_and_transforms(tmp_path):
    write_folder(tmp_path, classes=('n02', 'n01'))
    (tmp_path / 'train' / 'n01' / 'notes.txt').write_text('not an image')
    train = ImageFolderDataset(str(tmp_path), 'train', pipeline=dict(
        type='TimmTransform', is_training=True, input_size=32, interpolation='bicubic',
        auto_augment='rand-m9-mstd0.5-inc1', re_prob=0.25, re_mode='pixel'))
    assert train.classes == ('n01', 'n02') and len(train) == 4
    assert [label for _, label in train.samples] == [0, 0, 1, 1]
    item = train[3]
    assert item['inputs'].shape == (3, 32, 32) and item['inputs'].dtype == torch.float32
    assert item['labels'] == 1
    val = ImageFolderDataset(str(tmp_path), 'train', classes=('n02',), pipeline=TimmTransform(
        input_size=32, interpolation='bicubic', crop_pct=0.875, crop_mode='squash'))
    assert val.metainfo == dict(classes=('n02',)) and len(val) == 2
    # squash: both sides to 32 / 0.875 = 36, then the center 32 x 32
    img = Image.open(val.samples[0][0]).convert('RGB')
    resized = img.resize((36, 36), Image.BICUBIC).crop((2, 2, 34, 34))
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    expected = (torch.from_numpy(np.array(resized)).permute(2, 0, 1).float() / 255 - mean[:, None, None]) / std[:, None, None]
    assert torch.allclose(val[0]['inputs'], expected, atol=0.02)


def test_image_folder_errors_name_the_path(tmp_path):
    with pytest.raises(DataRootError, match=f'image folder not found: {tmp_path}/val '):
        ImageFolderDataset(str(tmp_path), 'val')
    (tmp_path / 'val').mkdir()
    with pytest.raises(DataRootError, match=f'image folder is empty: {tmp_path}/val has no class'):
        ImageFolderDataset(str(tmp_path), 'val')
    (tmp_path / 'val' / 'n01').mkdir()
    with pytest.raises(DataRootError, match=f'no .* images in the 1 class folders of {tmp_path}/val'):
        ImageFolderDataset(str(tmp_path), 'val')
    write_folder(tmp_path, 'val', classes=('n01',))
    with pytest.raises(DataRootError, match='class folder.s. missing in .*: n02'):
        ImageFolderDataset(str(tmp_path), 'val', classes=('n01', 'n02'))
    assert isinstance(DataRootError('x'), FileNotFoundError)


# ---------------------------------------------------------------- checkpoints


class NotAllowed:
    pass


def test_trusted_loading_reads_mmengine_state_and_nothing_else(tmp_path):
    from mmengine.logging import HistoryBuffer
    buffer = HistoryBuffer()
    buffer.update(0.5)
    state = {'message_hub': {'log_scalars': collections.OrderedDict(loss=buffer)},
             'param_schedulers': [{'milestones': collections.Counter([8, 11])}],
             'meta': {'best_score': np.float64(81.5), 'seed': np.int64(3), 'arr': np.arange(3, dtype=np.float32)},
             'state_dict': {'w': torch.ones(2)}}
    path = tmp_path / 'mmengine.pth'
    torch.save(state, path)
    with pytest.raises(Exception, match='HistoryBuffer'):  # what mmengine 0.10.7 runs into under torch >= 2.6
        torch.load(path)
    with trusted_checkpoint_loading():
        loaded = torch.load(path)
    assert loaded['message_hub']['log_scalars']['loss'].current() == 0.5
    assert loaded['param_schedulers'][0]['milestones'] == collections.Counter([8, 11])
    assert loaded['meta']['best_score'] == 81.5 and np.array_equal(loaded['meta']['arr'], np.arange(3))
    # the allowlist is narrow and lives only inside the block
    torch.save({'x': NotAllowed()}, tmp_path / 'other.pth')
    with pytest.raises(CheckpointError, match='other.pth safely'):
        load_trusted_checkpoint(tmp_path / 'other.pth')
    with pytest.raises(Exception, match='HistoryBuffer'):
        torch.load(path)


def test_classifier_loads_official_layout_strictly(tmp_path):
    source = tiny_classifier()
    save_official_checkpoint(tmp_path / 'official.pth', source.model.state_dict())
    target = tiny_classifier()
    load_classifier_checkpoint(target, str(tmp_path / 'official.pth'))
    assert all(torch.equal(v, target.model.state_dict()[k]) for k, v in source.model.state_dict().items())
    # an mmengine checkpoint of the classifier loads as well
    torch.save({'state_dict': source.state_dict(), 'meta': {}}, tmp_path / 'mmengine.pth')
    load_classifier_checkpoint(tiny_classifier(), str(tmp_path / 'mmengine.pth'))
    # a checkpoint of another class count: strict evaluation refuses it naming the key, fine-tuning drops the head
    other = TimmClassifier('test_vit', num_classes=7, img_size=32)
    save_official_checkpoint(tmp_path / 'other.pth', other.model.state_dict())
    with pytest.raises(CheckpointError, match=r'shape mismatch: head.weight \(7, '):
        load_classifier_checkpoint(tiny_classifier(), str(tmp_path / 'other.pth'))
    finetune = tiny_classifier(pretrained=str(tmp_path / 'other.pth'))
    head_before = finetune.model.head.weight.clone()
    finetune.init_weights()
    assert torch.equal(finetune.model.blocks[0].attn.qkv.weight, other.model.blocks[0].attn.qkv.weight)
    assert torch.equal(finetune.model.head.weight, head_before)


# ---------------------------------------------------------------- registry scope and configs


def test_scope_resolves_without_warnings():
    from mmengine.registry import MODELS, DefaultScope
    import linattn_vision.registry as scope_registry
    assert scope_registry.SCOPE == 'linattn_vision'
    assert MODELS._search_child('linattn_vision') is scope_registry.MODELS
    with DefaultScope.overwrite_default_scope('linattn_vision'):
        with MODELS.switch_scope_and_registry(None) as registry:
            assert registry is scope_registry.MODELS
            assert registry.get('TimmClassifier') is TimmClassifier
            assert registry.get('BaseDataPreprocessor') is not None  # mmengine's, through the parent


EXPECTED_CONFIGS = sorted(
    [f'flatten_swin_{v}' for v in 'tsb'] + ['flatten_swin_b_384'] + [f'flatten_pvt_{v}' for v in 'tsml']
    + [f'flatten_pvt_v2_b{i}' for i in range(5)] + [f'flatten_cswin_{v}' for v in 'tsb'] + ['flatten_cswin_b_384']
    + [f'flatten_deit_{v}' for v in 'tsb'] + [f'agent_swin_{v}' for v in 'tsb'] + ['agent_swin_s_288',
                                                                                      'agent_swin_b_384']
    + [f'agent_pvt_{v}' for v in 'tsml'] + ['agent_pvt_m_256'] + [f'agent_deit_{v}' for v in 'tsb']
    + ['agent_deit_s_448'] + [f'agent_cswin_{v}' for v in 'tsb'] + ['agent_cswin_b_384'])


def test_every_variant_has_a_config_with_its_recipe():
    from mmengine.config import Config
    configs = sorted(p.name[:-len('_in1k.py')] for p in (REPO / 'configs' / 'cls').glob('*_in1k.py'))
    assert configs == EXPECTED_CONFIGS
    registered = set(timm.list_models('flatten_*') + timm.list_models('agent_*'))
    for name in configs:
        cfg = Config.fromfile(REPO / 'configs' / 'cls' / f'{name}_in1k.py')
        assert cfg.default_scope == 'linattn_vision'
        assert cfg.model.model_name == name and name in registered, name
        warmup = [s for s in cfg.param_scheduler if s.type == 'LinearLR']
        cosine = [s for s in cfg.param_scheduler if s.type == 'CosineAnnealingLR']
        assert len(cosine) == 1 and cfg.auto_scale_lr == dict(enable=True, base_batch_size=512)
        size = cfg.train_dataloader.dataset.pipeline.input_size
        assert cfg.val_dataloader.dataset.pipeline.input_size == size == cfg.test_dataloader.dataset.pipeline.input_size
        assert (size == 224) == (not any(s in name for s in ('_288', '_256', '_384', '_448'))), name
        if name.endswith('_384'):  # fine-tunes from the 224 model
            assert cfg.model.pretrained and cfg.optim_wrapper.optimizer.weight_decay == 1e-8
            continue
        assert cfg.model.mixup.mixup_alpha == 0.8 and cfg.model.mixup.cutmix_alpha == 1.0
        assert cfg.model.label_smoothing == 0.1
        assert cfg.optim_wrapper.optimizer.type == 'AdamW' and cfg.optim_wrapper.optimizer.lr == 5e-4
        assert cfg.optim_wrapper.constructor == 'NoDecayOptimWrapperConstructor'
        assert warmup[0].end == (5 if '_pvt' in name else 20), name
        assert cosine[0].end == 300
        assert cfg.train_cfg.max_epochs == (310 if ('_pvt' in name or 'cswin' in name) else 300), name
        clip = (cfg.optim_wrapper.get('clip_grad') or {}).get('max_norm')
        if 'swin' in name and 'cswin' not in name or 'deit' in name:
            assert clip == 5.0, name
        ema = [h for h in cfg.get('custom_hooks', []) if h.type == 'EMAHook']
        assert bool(ema) == ('cswin' in name), name


def test_transforms_build_whatever_scope_is_current(tmp_path):
    """A det/seg run earlier in the process leaves 'mmdet' as the default scope; classification still builds."""
    from mmengine.registry import DefaultScope
    write_folder(tmp_path, classes=('n01',))
    with DefaultScope.overwrite_default_scope('mmdet'):
        data = ImageFolderDataset(str(tmp_path), 'train', pipeline=dict(type='TimmTransform', input_size=32))
        assert data[0]['inputs'].shape == (3, 32, 32)
