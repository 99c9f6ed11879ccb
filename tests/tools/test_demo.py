"""The README's first command (tools/run_demo.sh) end to end in its quick mode, and the pieces it is made of.

The quick run generates tiny demo data into tmp_path, trains each demo config for a few iterations, evaluates it
through tools/test.py and writes the prediction pictures, the loss / metric curves and the summary.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip('mmengine', reason='the mm extra (mmengine) is part of this project\'s test environment')

from mmengine.config import Config  # noqa: E402

from linattn_vision.data import DEMO_CLASSES, DEMO_PALETTE, DEMO_SEG_CLASSES, DEMO_SEG_PALETTE  # noqa: E402
from tool_helpers import load_tool  # noqa: E402  (tests/tool_helpers.py)

pytestmark = pytest.mark.mm
REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / 'configs' / 'demo'
PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def run_demo(*args, env=None, timeout=600):
    full_env = dict(os.environ, DEMO_PYTHON=sys.executable, **(env or {}))
    return subprocess.run(['bash', str(REPO / 'tools' / 'run_demo.sh'), *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def assert_png(path: Path):
    assert path.is_file(), f'{path} missing'
    assert path.read_bytes()[:8] == PNG_MAGIC, f'{path} is not a PNG'


# ---- configs ----------------------------------------------------------------------------------------------------
def test_demo_configs_match_the_demo_data_classes():
    det = Config.fromfile(str(DEMO / 'retinanet_flatten-pvt-demo_shapes-coco.py'))
    assert tuple(det.metainfo['classes']) == DEMO_CLASSES
    assert [tuple(c) for c in det.metainfo['palette']] == [tuple(c) for c in DEMO_PALETTE]
    assert det.model.bbox_head.num_classes == len(DEMO_CLASSES)
    assert det.model.backbone.type == 'FLattenPVT'
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert det[loader].dataset.metainfo == det.metainfo

    seg = Config.fromfile(str(DEMO / 'fpn_agent-pvt-demo_shapes-ade.py'))
    assert tuple(seg.metainfo['classes']) == DEMO_SEG_CLASSES
    assert [tuple(c) for c in seg.metainfo['palette']] == [tuple(c) for c in DEMO_SEG_PALETTE]
    assert seg.model.decode_head.num_classes == len(DEMO_SEG_CLASSES)
    assert seg.model.backbone.type == 'AgentPVT'

    cls = Config.fromfile(str(DEMO / 'flatten-pvt-demo_shapes-imagefolder.py'))
    assert cls.model.num_classes == len(DEMO_CLASSES)
    assert cls.model.model_name.startswith('flatten_')


def test_demo_configs_take_the_data_root_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv('LINATTN_DEMO_DATA', str(tmp_path))
    det = Config.fromfile(str(DEMO / 'retinanet_flatten-pvt-demo_shapes-coco.py'))
    assert det.train_dataloader.dataset.data_root == f'{tmp_path}/coco/'
    assert det.val_evaluator.ann_file == f'{tmp_path}/coco/annotations/instances_val2017.json'
    seg = Config.fromfile(str(DEMO / 'fpn_agent-pvt-demo_shapes-ade.py'))
    assert seg.val_dataloader.dataset.data_root == f'{tmp_path}/ade/ADEChallengeData2016'
    cls = Config.fromfile(str(DEMO / 'flatten-pvt-demo_shapes-imagefolder.py'))
    assert cls.train_dataloader.dataset.data_root == f'{tmp_path}/imagenet'


def test_demo_configs_name_no_device():
    for path in DEMO.glob('*.py'):
        text = path.read_text()
        assert not re.search(r"""['"](cpu|cuda)(:\d+)?['"]""", text), f'{path.name} hard-codes a device'


# ---- curves -----------------------------------------------------------------------------------------------------
def write_scalars(run_dir: Path, lines):
    vis = run_dir / 'vis_data'
    vis.mkdir(parents=True)
    (vis / 'scalars.json').write_text(''.join(json.dumps(line) + '\n' for line in lines))


def test_plot_curves_writes_loss_and_metric_pngs(tmp_path):
    work = tmp_path / 'det'
    train = [dict(lr=1e-3, loss=2.0 - i / 10, loss_cls=1.0 - i / 20, loss_bbox=1.0 - i / 20, epoch=1 + i // 5,
                  iter=10 * (i + 1), step=10 * (i + 1)) for i in range(10)]
    val = [dict(**{'coco/bbox_mAP': 0.1, 'coco/bbox_mAP_50': 0.3}, time=0.1, step=1),
           dict(**{'coco/bbox_mAP': 0.2, 'coco/bbox_mAP_50': 0.5}, time=0.1, step=2)]
    write_scalars(work / '20260101_000000', train + val)
    write_scalars(work / '20250101_000000', train[:2])  # an older run: not the one plotted
    (work / '20260101_000100').mkdir()  # a test-only run without scalars

    plot_curves = load_tool('plot_curves')
    assert plot_curves.find_scalars(str(work)) == str(work / '20260101_000000' / 'vis_data' / 'scalars.json')
    train_records, val_records = plot_curves.read_scalars(plot_curves.find_scalars(str(work)))
    assert plot_curves.loss_keys(train_records) == ['loss', 'loss_bbox', 'loss_cls']
    assert plot_curves.metric_keys(val_records) == ['coco/bbox_mAP', 'coco/bbox_mAP_50']
    written = plot_curves.main([str(work)])
    assert written == [str(work / 'loss_curve.png'), str(work / 'metric_curve.png')]
    for path in written:
        assert_png(Path(path))


def test_plot_curves_names_a_work_dir_without_training_scalars(tmp_path, capsys):
    plot_curves = load_tool('plot_curves')
    with pytest.raises(SystemExit) as exit_info:
        plot_curves.main([str(tmp_path / 'missing')])
    assert exit_info.value.code == 2
    assert 'work dir not found' in capsys.readouterr().err
    write_scalars(tmp_path / 'empty' / '20260101_000000', [dict(**{'accuracy/top1': 50.0}, step=1)])
    with pytest.raises(SystemExit):
        plot_curves.main([str(tmp_path / 'empty')])
    assert 'no training scalars' in capsys.readouterr().err


# ---- the script -------------------------------------------------------------------------------------------------
def test_run_demo_rejects_unknown_options_before_doing_anything(tmp_path):
    result = run_demo('--tasks', 'det pose', '--work-dir', str(tmp_path / 'work'), timeout=60)
    assert result.returncode == 2
    assert "unknown task 'pose'" in result.stderr
    assert not (tmp_path / 'work').exists()
    result = run_demo('--fast', timeout=60)
    assert result.returncode == 2 and 'unknown option --fast' in result.stderr


@pytest.mark.slow
def test_run_demo_quick_trains_evaluates_and_draws(tmp_path):
    work, data = tmp_path / 'work', tmp_path / 'data'
    result = run_demo('--quick', '--skip-setup', '--work-dir', str(work), '--data', str(data))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]

    # progress: mmengine's log lines with ETA, bars for data generation and evaluation
    assert re.search(r'Epoch\(train\) +\[1\]\[\d+/\d+\] +lr: \S+ +eta:', output)
    assert re.search(r'Iter\(train\) +\[ *\d+/4\] +lr: \S+ +eta:', output)
    assert 'test: 100%' in output and 'val: 100%' in output
    assert re.search(r'val: .*100%', output)

    # metrics from the evaluations, printed in the summary
    summary = result.stdout[result.stdout.rindex('summary'):]
    assert re.search(r'det: coco/bbox_mAP \d', summary), summary
    assert re.search(r'seg: mIoU \d', summary), summary
    assert re.search(r'cls: accuracy/top1 \d', summary), summary

    # pictures: mmdet / mmseg visualizer overlays of every test image, the classification grid
    det_pictures = list(work.glob('det/*/pictures/*.jpg'))
    assert len(det_pictures) == 12, det_pictures
    seg_pictures = list((work / 'seg' / 'pictures').rglob('*.png'))
    assert len(seg_pictures) == 12, seg_pictures
    assert_png(work / 'cls' / 'pictures' / 'predictions.png')
    for task in ('det', 'seg', 'cls'):
        assert_png(work / task / 'loss_curve.png')
        assert_png(work / task / 'metric_curve.png')
        assert str(work / task / 'loss_curve.png') in summary
    # the data went where it was told to, with the quick sizes
    manifest = json.loads((data / 'coco' / 'demo_manifest.json').read_text())
    assert manifest['params']['num_train'] == 24 and manifest['params']['num_val'] == 12


def test_tensorboard_switch_derives_a_config_with_both_backends(tmp_path):
    # run_demo.sh --tensorboard (when tensorboard is installed) trains a config derived from the demo config
    script = (f'ROOT={REPO}; source <(sed -n "/^with_tensorboard()/,/^}}/p" {REPO}/tools/run_demo.sh); '
              f'with_tensorboard configs/demo/fpn_agent-pvt-demo_shapes-ade.py {tmp_path}/seg')
    result = subprocess.run(['bash', '-c', script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    derived = Config.fromfile(result.stdout.strip())
    assert [b['type'] for b in derived.visualizer.vis_backends] == ['LocalVisBackend', 'TensorboardVisBackend']
    assert derived.model.backbone.type == 'AgentPVT' and derived.train_cfg.max_iters > 0
