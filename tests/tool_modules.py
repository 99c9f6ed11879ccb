"""The scripts under tools/ as modules, for tests that call their functions."""
import importlib.util
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[1] / 'tools'


def load_tool(name: str):
    """tools/<name>.py as a fresh module (not put in sys.modules: ``test`` would clash with the standard library's
    package of that name). The tools put tools/ on sys.path themselves where they import each other."""
    spec = importlib.util.spec_from_file_location(f'linattn_tools_{name}', TOOLS / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
