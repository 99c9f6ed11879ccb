import subprocess
import sys


def test_import_needs_only_timm():
    """`import linattn_vision` registers models without importing any OpenMMLab package."""
    code = ("import sys, linattn_vision, timm; "
            "bad = [m for m in ('mmcv', 'mmdet', 'mmseg', 'mmengine') if m in sys.modules]; "
            "assert not bad, bad; print(len(timm.list_models('flatten_*')) + len(timm.list_models('agent_*')))")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
