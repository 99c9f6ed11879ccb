"""Running Triton kernels on CPU tensors through Triton's interpreter: TRITON_INTERPRET must be set before a kernel
module is imported, so the code runs in a fresh Python."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_in_interpreter(code: str, timeout: int = 600):
    """Runs ``code`` with TRITON_INTERPRET=1 (this checkout and tests/ first on the path, the exact path not
    forced) and returns the JSON it printed on a line starting with RESULTS."""
    path = os.pathsep.join([str(ROOT), str(ROOT / 'tests'), os.environ.get('PYTHONPATH', '')])  # (tests: helpers)
    env = dict(os.environ, TRITON_INTERPRET='1', PYTHONPATH=path)
    env.pop('LINATTN_FORCE_REFERENCE', None)
    proc = subprocess.run([sys.executable, '-c', code], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith('RESULTS'))
    return json.loads(line[len('RESULTS'):])
