"""tools/convert_checkpoint.py: official release layout -> safetensors that timm and the filters take as is."""
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

import linattn_vision  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / 'tools'))
import convert_checkpoint  # noqa: E402
from official_layout import save_official_checkpoint  # noqa: E402


def test_official_file_converts_and_reproduces_outputs(tmp_path):
    model = timm.create_model('flatten_pvt_v2_b0').eval()
    src, dst = tmp_path / 'official.pth', tmp_path / 'converted.safetensors'
    save_official_checkpoint(src, model.state_dict())
    convert_checkpoint.main([str(src), str(dst), '--model', 'flatten_pvt_v2_b0'])
    loaded = timm.create_model('flatten_pvt_v2_b0', pretrained=True,
                               pretrained_cfg_overlay=dict(file=str(dst))).eval()
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_wrong_model_names_the_offending_keys(tmp_path):
    src, dst = tmp_path / 'official.pth', tmp_path / 'out.safetensors'
    save_official_checkpoint(src, timm.create_model('flatten_pvt_v2_b0').state_dict())
    proc = subprocess.run([sys.executable, str(ROOT / 'tools' / 'convert_checkpoint.py'), str(src), str(dst),
                           '--model', 'flatten_pvt_v2_b1'], capture_output=True, text=True)
    assert proc.returncode != 0
    assert 'error:' in proc.stderr and ('shape mismatch' in proc.stderr or 'missing keys' in proc.stderr)
    assert 'Traceback' not in proc.stderr
    assert not dst.exists()


def test_unknown_model_and_missing_file_are_one_line_errors(tmp_path):
    with pytest.raises(SystemExit, match='unknown model'):
        convert_checkpoint.main([str(tmp_path / 'x.pth'), str(tmp_path / 'y.safetensors'), '--model', 'flaten_swin_t'])
    with pytest.raises(SystemExit, match='not found'):
        convert_checkpoint.main([str(tmp_path / 'x.pth'), str(tmp_path / 'y.safetensors'), '--model', 'flatten_swin_t'])
