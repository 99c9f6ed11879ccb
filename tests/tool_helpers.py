"""What tests of the tools/ scripts share: loading a script as a module, a free port for torchrun."""
import importlib.util
import socket
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[1] / 'tools'


def load_tool(name: str):
    """tools/<name>.py as a fresh module (not put in sys.modules: ``test`` would clash with the standard library's
    package of that name). The tools put tools/ on sys.path themselves where they import each other."""
    spec = importlib.util.spec_from_file_location(f'linattn_tools_{name}', TOOLS / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    """A TCP port free on this machine now (torchrun's --master_port, so parallel runs do not collide)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]
