"""ImageNet-style classification end to end on CPU through tools/train.py and tools/test.py.

A separable toy ImageFolder (four colours) is written into tmp_path; the configs inherit the shipped configs/_base_
files and shrink only the model (timm's test_vit at 32 px), batch, epochs and learning rate.
"""
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip('mmengine', reason='the mm extra (mmengine) is part of this project\'s test environment')

from mmengine.hooks import Hook  # noqa: E402
from mmengine.registry import HOOKS  # noqa: E402
from official_layout import save_official_checkpoint  # noqa: E402
from tool_helpers import free_port, load_tool  # noqa: E402  (tests/tool_helpers.py)

pytestmark = pytest.mark.mm
REPO = Path(__file__).resolve().parents[2]


train_tool, test_tool = load_tool('train'), load_tool('test')

COLOURS = [(220, 40, 40), (40, 200, 40), (40, 60, 220), (230, 220, 40)]
ITERS_PER_EPOCH = 4  # 32 training images, batch 8
EPOCHS = 4


def write_toy_folder(root, split, per_class, seed):
    rng = np.random.default_rng(seed)
    for label, colour in enumerate(COLOURS):
        folder = root / split / f'n0000000{label}'
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colour)[None, None] + rng.normal(0, 40, (36, 40, 3)), 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(folder / f'img_{i}.JPEG')


@pytest.fixture(scope='module')
def toy_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('toy_imagenet')
    write_toy_folder(root, 'train', per_class=8, seed=0)
    write_toy_folder(root, 'val', per_class=2, seed=1)  # 8 images: 4 + 4 on two ranks
    return root


def write_config(path, data_root, model="dict(model_name='test_vit', img_size=32)", size=32, extra=''):
    path.write_text(f"""
_base_ = [
    '{REPO}/configs/_base_/models/timm_classifier.py',
    '{REPO}/configs/_base_/datasets/imagenet.py',
    '{REPO}/configs/_base_/schedules/cls_swin_300e.py',
    '{REPO}/configs/_base_/cls_runtime.py',
]
data_root = '{data_root}'
model = {model}
model.update(num_classes=4, drop_path_rate=0.0, mixup=None)
train_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False, pin_memory=False,
    dataset=dict(data_root=data_root, pipeline=dict(
        _delete_=True, type='TimmTransform', is_training=True, input_size={size}, scale=(0.5, 1.0),
        interpolation='bicubic')))
val_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False, pin_memory=False,
    dataset=dict(data_root=data_root, pipeline=dict(input_size={size}, crop_pct=1.0)))
test_dataloader = val_dataloader
optim_wrapper = dict(optimizer=dict(lr=2e-3))
auto_scale_lr = dict(enable=False)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min_ratio=1e-2, by_epoch=True, begin=1, end={EPOCHS}, T_max={EPOCHS - 1},
         convert_to_iter_based=True),
]
train_cfg = dict(max_epochs={EPOCHS})
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(max_keep_ckpts=5))
env_cfg = dict(cudnn_benchmark=False)
{extra}
""")
    return str(path)


def logged(runner):
    """Per-iteration training scalars and per-epoch validation metrics of one run (its vis_data/scalars.json)."""
    train, val = {}, []
    with open(os.path.join(runner.log_dir, 'vis_data', 'scalars.json')) as f:
        for line in f:
            record = json.loads(line)
            if 'lr' in record:
                train[record['iter']] = record
            elif 'accuracy/top1' in record:
                val.append(record['accuracy/top1'])
    return train, val


class Interrupted(Exception):
    pass


@HOOKS.register_module(force=True)
class InterruptAtIter(Hook):
    """Kills the run after ``at`` training iterations, as a crash or a pre-empted job would."""

    def __init__(self, at):
        self.at = at

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 >= self.at:
            raise Interrupted(f'stopped after iteration {runner.iter + 1}')


@pytest.fixture(scope='module')
def full_run(toy_root, tmp_path_factory):
    """One uninterrupted run: 4 epochs of 4 iterations; the reference for the resume test."""
    tmp = tmp_path_factory.mktemp('full')
    config = write_config(tmp / 'toy_full.py', toy_root)
    runner = train_tool.main([config, '--work-dir', str(tmp / 'work'), '--cfg-options', 'experiment_name=full'])
    return runner, tmp / 'work'


def test_training_learns_the_toy_set(full_run):
    runner, work_dir = full_run
    assert runner.iter == EPOCHS * ITERS_PER_EPOCH and runner.epoch == EPOCHS
    train, val = logged(runner)
    assert sorted(train) == list(range(1, EPOCHS * ITERS_PER_EPOCH + 1))
    losses = [train[i]['loss'] for i in sorted(train)]
    assert np.mean(losses[-ITERS_PER_EPOCH:]) < 0.8 * np.mean(losses[:ITERS_PER_EPOCH])
    assert len(val) == EPOCHS and val[-1] >= 87.5  # at most one of 8 validation images wrong
    assert sorted(p.name for p in work_dir.glob('epoch_*.pth')) == [f'epoch_{e}.pth' for e in range(1, EPOCHS + 1)]


def test_interrupted_run_resumes_with_the_same_steps_and_lr(full_run, toy_root, tmp_path):
    reference, _ = full_run
    config = write_config(tmp_path / 'toy_resume.py', toy_root)
    crashing = write_config(tmp_path / 'toy_crash.py', toy_root,
                            extra="custom_hooks = [dict(type='InterruptAtIter', at=10)]")
    work_dir = str(tmp_path / 'work')
    # killed in the middle of epoch 3: the last checkpoint is epoch_2.pth (8 iterations)
    with pytest.raises(Interrupted, match='after iteration 10'):
        train_tool.main([crashing, '--work-dir', work_dir, '--cfg-options', 'experiment_name=interrupted'])
    checkpoint = os.path.join(work_dir, 'epoch_2.pth')
    assert open(os.path.join(work_dir, 'last_checkpoint')).read().strip().endswith('epoch_2.pth')
    with pytest.raises(Exception, match='HistoryBuffer'):  # mmengine's own files under torch's weights_only default
        torch.load(checkpoint)
    assert 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD' not in os.environ

    # mmengine names a run's log folder by its start second: start the resumed run in a later second than the
    # interrupted one, or both write into one scalars.json (a fast machine did that once)
    time.sleep(1.01 - time.time() % 1)
    resumed = train_tool.main([config, '--work-dir', work_dir, '--resume', '--cfg-options', 'experiment_name=resumed'])
    assert resumed.iter == reference.iter == EPOCHS * ITERS_PER_EPOCH and resumed.epoch == reference.epoch
    assert resumed.optim_wrapper.get_lr() == reference.optim_wrapper.get_lr()
    train, _ = logged(resumed)
    ref_train, _ = logged(reference)
    assert sorted(train) == list(range(2 * ITERS_PER_EPOCH + 1, EPOCHS * ITERS_PER_EPOCH + 1))  # from iteration 9 on
    assert [train[i]['lr'] for i in sorted(train)] == [ref_train[i]['lr'] for i in sorted(train)]
    # an explicit path resumes the same way
    explicit = train_tool.main([config, '--work-dir', str(tmp_path / 'work2'), '--resume', checkpoint,
                                '--cfg-options', 'experiment_name=explicit', 'train_cfg.max_epochs=3',
                                'param_scheduler.1.end=3'])
    assert explicit.iter == 3 * ITERS_PER_EPOCH


def save_untrained_official(path, seed=0):
    """The toy model at initialisation in the official layout."""
    from linattn_vision.mm.classification import TimmClassifier
    torch.manual_seed(seed)
    save_official_checkpoint(path, TimmClassifier('test_vit', num_classes=4, img_size=32).model.state_dict())


def test_test_tool_reports_top1(full_run, toy_root, tmp_path, capsys):
    _, work_dir = full_run
    config = write_config(tmp_path / 'toy_test.py', toy_root)
    trained = test_tool.main([config, str(work_dir / f'epoch_{EPOCHS}.pth'), '--work-dir', str(tmp_path / 'a'),
                              '--out', str(tmp_path / 'preds.pkl'), '--cfg-options', 'experiment_name=test_trained'])
    out = capsys.readouterr().out
    assert re.search(r'Epoch\(test\).*accuracy/top1: 100\.0000|accuracy/top1: [89]\d\.\d+', out), out[-2000:]
    assert trained['accuracy/top1'] >= 87.5
    with open(tmp_path / 'preds.pkl', 'rb') as f:
        predictions = pickle.load(f)
    assert len(predictions) == 8 and {'pred_score', 'pred_label', 'gt_label'} <= set(predictions[0])

    save_untrained_official(tmp_path / 'untrained.pth')
    untrained = test_tool.main([config, str(tmp_path / 'untrained.pth'), '--work-dir', str(tmp_path / 'b'),
                                '--cfg-options', 'experiment_name=test_untrained'])
    assert untrained['accuracy/top1'] <= trained['accuracy/top1'] - 25
    compiled = test_tool.main([config, str(tmp_path / 'untrained.pth'), '--work-dir', str(tmp_path / 'c'),
                               '--compile', 'aot_eager', '--cfg-options', 'experiment_name=test_compiled'])
    assert compiled == pytest.approx(untrained)
    assert "torch.compile(backend='aot_eager') on model" in capsys.readouterr().out


def test_driver_options_edit_the_config(tmp_path):
    from mmengine.config import Config

    from linattn_vision.mm import launch
    from linattn_vision.mm.errors import UserInputError
    config = str(REPO / 'configs' / 'cls' / 'flatten_swin_t_in1k.py')
    cfg = launch.load_config(config, {'train_dataloader.batch_size': 64})
    assert cfg.train_dataloader.batch_size == 64 and cfg.work_dir == './work_dirs/flatten_swin_t_in1k'
    assert launch.config_scope(cfg) == launch.CLASSIFICATION_SCOPE
    launch.enable_amp(cfg)
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper' and cfg.optim_wrapper.loss_scale == 'dynamic'
    assert cfg.optim_wrapper.clip_grad == dict(max_norm=5.0)  # the rest of the wrapper is kept
    launch.apply_resume(cfg, 'auto')
    assert cfg.resume is True and cfg.load_from is None
    with pytest.raises(FileNotFoundError, match='--resume checkpoint not found'):
        launch.apply_resume(cfg, str(tmp_path / 'nope.pth'))
    with pytest.raises(UserInputError, match="default_scope is 'linattn_vision'"):
        launch.enable_visualization(cfg, 'linattn_vision', False, 'shows', 2)
    det = Config(dict(default_scope='mmdet', default_hooks=dict(visualization=dict(type='DetVisualizationHook'))))
    launch.enable_visualization(det, 'mmdet', False, 'shows', 2)
    assert det.default_hooks.visualization == dict(type='DetVisualizationHook', draw=True, test_out_dir='shows')
    seg = Config(dict(default_scope='mmseg', default_hooks=dict(visualization=dict(type='SegVisualizationHook')),
                      visualizer=dict(type='SegLocalVisualizer')))
    launch.enable_visualization(seg, 'mmseg', True, 'shows', 1)
    assert seg.default_hooks.visualization.draw and seg.default_hooks.visualization.show
    assert seg.visualizer.save_dir == 'shows'


def run_tool(*args, env=None):
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_missing_dataset_is_one_line(toy_root, tmp_path):
    config = write_config(tmp_path / 'toy_missing.py', tmp_path / 'nowhere')
    result = run_tool('tools/train.py', config, '--work-dir', str(tmp_path / 'work'))
    assert result.returncode == 2
    assert 'Traceback' not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('train.py: error: ')
    assert str(tmp_path / 'nowhere') in lines[0]

@pytest.mark.skipif(torch.cuda.is_available(), reason='AMP without an accelerator')
def test_amp_without_an_accelerator_is_one_line(toy_root, tmp_path, capsys):
    """mmengine's AmpOptimWrapper asserted deep in the runner's build (a 30-line traceback) on a CPU machine."""
    config = write_config(tmp_path / 'toy_amp.py', toy_root)
    with pytest.raises(SystemExit) as exit_info:
        train_tool.main([config, '--amp', '--work-dir', str(tmp_path / 'work')])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('train.py: error: AMP training') and 'needs a GPU' in err[0], err


def test_test_tool_input_errors_are_one_line(toy_root, tmp_path, capsys):
    save_untrained_official(tmp_path / 'untrained.pth')
    config = write_config(tmp_path / 'toy_nosplit.py', toy_root,
                          extra="val_dataloader['dataset']['split'] = 'validation'")
    cases = [([config, str(tmp_path / 'missing.pth')], f'checkpoint file not found: {tmp_path}/missing.pth'),
             ([config, str(tmp_path / 'untrained.pth')], f'image folder not found: {toy_root}/validation'),
             ([str(tmp_path / 'nope.py'), str(tmp_path / 'untrained.pth')], 'config file not found')]
    for argv, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            test_tool.main(argv + ['--work-dir', str(tmp_path / 'work')])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith('test.py: error: ') and message in err[0], err
    # weights of another model: the keys at fault are named
    config = write_config(tmp_path / 'toy_other.py', toy_root, model="dict(model_name='test_vit', img_size=32)")
    torch.save({'model': {'blocks.0.attn.qkv.weight': torch.zeros(3, 3)}}, tmp_path / 'other.pth')
    with pytest.raises(SystemExit):
        test_tool.main([config, str(tmp_path / 'other.pth'), '--work-dir', str(tmp_path / 'work')])
    err = capsys.readouterr().err
    assert 'does not fit VisionTransformer: missing keys: cls_token' in err and 'shape mismatch' in err


def test_official_flatten_checkpoint_evaluates_directly(toy_root, tmp_path, capsys):
    """A FLatten model of this toolkit, trained a few steps at 32 px and evaluated from an official-layout file
    (with the yacs CfgNode the releases pickle) by tools/test.py."""
    model = "dict(model_name='flatten_deit_t', img_size=32)"
    config = write_config(tmp_path / 'toy_flatten.py', toy_root, model=model,
                          extra="train_cfg = dict(max_epochs=1)\nparam_scheduler = [dict(type='ConstantLR', "
                                "factor=1.0, by_epoch=False, begin=0, end=1)]")
    runner = train_tool.main([config, '--work-dir', str(tmp_path / 'work'), '--cfg-options', 'experiment_name=flatten'])
    assert runner.iter == ITERS_PER_EPOCH
    net = runner.model.model
    save_official_checkpoint(tmp_path / 'flatten_deit_t_official.pth', net.state_dict())
    capsys.readouterr()
    metrics = test_tool.main([config, str(tmp_path / 'flatten_deit_t_official.pth'), '--work-dir',
                              str(tmp_path / 'test'), '--cfg-options', 'experiment_name=flatten_test'])
    assert 'accuracy/top1' in capsys.readouterr().out
    # the same weights through the runner's own checkpoint give the same numbers
    same = test_tool.main([config, str(tmp_path / 'work' / 'epoch_1.pth'), '--work-dir', str(tmp_path / 'test2'),
                           '--cfg-options', 'experiment_name=flatten_test2'])
    assert metrics == same


@pytest.mark.slow
def test_two_process_evaluation_counts_every_image_once(toy_root, tmp_path):
    """torchrun, 2 CPU processes (gloo): 7 validation images are split 4 + 4 with one padded duplicate; top-1 must
    equal the single-process value over the 7."""
    root = tmp_path / 'data'
    shutil.copytree(toy_root, root)
    os.remove(root / 'val' / 'n00000003' / 'img_1.JPEG')
    config = write_config(tmp_path / 'toy_ddp.py', root)
    save_untrained_official(tmp_path / 'untrained.pth')  # some right, some wrong: a counted duplicate would show
    checkpoint = str(tmp_path / 'untrained.pth')
    single = test_tool.main([config, checkpoint, '--work-dir', str(tmp_path / 'single'),
                             '--cfg-options', 'experiment_name=single'])['accuracy/top1']
    assert 0 < single < 100 and round(single * 7 / 100, 6).is_integer()
    result = run_tool('-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={free_port()}',
                      'tools/test.py', config, checkpoint, '--launcher', 'pytorch', '--work-dir',
                      str(tmp_path / 'ddp'), env=dict(OMP_NUM_THREADS='1'))
    assert result.returncode == 0, result.stderr[-3000:]
    found = re.findall(r'accuracy/top1: ([\d.]+)', result.stdout + result.stderr)
    assert found and float(found[-1]) == pytest.approx(single, abs=1e-3)


@HOOKS.register_module(force=True)
class CountCompiledGraphs(Hook):
    """Records how many graphs torch.compile has built when training starts and after each epoch's validation."""
    counts = []

    def before_train(self, runner):
        type(self).counts = [self._built()]

    def after_val_epoch(self, runner, metrics=None):
        self.counts.append(self._built())

    @staticmethod
    def _built():
        import torch._dynamo.utils
        return torch._dynamo.utils.counters['stats']['unique_graphs']


def test_compiled_training_compiles_the_network_once(toy_root, tmp_path):
    """--compile compiles the network (the classifier's timm model) in place, not mmengine's whole train_step: the
    learning rate changes every iteration (warm-up, then cosine), and a compiled optimizer step would recompile at
    each change (its guards hold the float lr). After the first epoch (training and validation graphs) nothing is
    compiled again. A FLatten model: focusing function, GridCache, the registered focused-linear op. aot_eager:
    Dynamo + AOTAutograd without inductor's C++ build."""
    config = write_config(tmp_path / 'toy_compiled.py', toy_root,
                          model="dict(model_name='flatten_pvt_v2_b0', img_size=32)",
                          extra="train_cfg = dict(max_epochs=2, val_interval=1)\n"
                                "custom_hooks = [dict(type='CountCompiledGraphs')]")
    runner = train_tool.main([config, '--work-dir', str(tmp_path / 'work'), '--compile', 'aot_eager',
                              '--cfg-options', 'experiment_name=compiled'])
    assert 'compile' not in runner.cfg, 'mmengine would compile the whole train_step'
    assert not hasattr(runner.model.train_step, '_torchdynamo_orig_callable')
    assert runner.model.model._compiled_call_impl is not None, 'the timm model was not compiled'
    start, epoch1, epoch2 = CountCompiledGraphs.counts
    assert epoch1 > start and epoch2 == epoch1, CountCompiledGraphs.counts
    train, val = logged(runner)
    assert len(train) == 2 * ITERS_PER_EPOCH and all(np.isfinite(r['loss']) for r in train.values())
    # a new lr every iteration but one (the warm-up ends at the rate the cosine starts from): what a compiled
    # optimizer step would have guarded on
    assert len({r['lr'] for r in train.values()}) == 2 * ITERS_PER_EPOCH - 1
    assert len(val) == 2
    saved = torch.load(tmp_path / 'work' / 'epoch_2.pth', map_location='cpu', weights_only=False)['state_dict']
    assert set(saved) == set(runner.model.state_dict()) and not any('_orig_mod' in k for k in saved)

    # a compiled run resumes (the checkpoint's parameter names are the plain model's) and goes on compiled
    time.sleep(1.01 - time.time() % 1)  # (a new log folder: see the resume test)
    resumed = train_tool.main([config, '--work-dir', str(tmp_path / 'work'), '--compile', 'aot_eager', '--resume',
                               '--cfg-options', 'experiment_name=resumed', 'train_cfg.max_epochs=3'])
    assert resumed.epoch == 3 and resumed.iter == 3 * ITERS_PER_EPOCH
    assert resumed.model.model._compiled_call_impl is not None
    train, _ = logged(resumed)
    assert sorted(train) == list(range(2 * ITERS_PER_EPOCH + 1, 3 * ITERS_PER_EPOCH + 1))


def test_compile_options_from_the_config_and_the_command_line():
    from mmengine.config import Config
    from linattn_vision.mm import launch
    from linattn_vision.mm.errors import UserInputError
    take = launch.take_compile_options
    assert take(Config(dict())) is None
    assert take(Config(dict(compile=False)), None, None) is None
    assert take(Config(dict(compile=True))) == {}
    cfg = Config(dict(compile=dict(backend='aot_eager', dynamic=False)))
    assert take(cfg, None, 'reduce-overhead') == dict(backend='aot_eager', dynamic=False, mode='reduce-overhead')
    assert 'compile' not in cfg
    assert take(Config(dict()), 'inductor', None) == dict(backend='inductor')
    with pytest.raises(UserInputError, match='compile setting'):
        take(Config(dict(compile='yes')))
