import random

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


def pytest_runtest_logreport(report):
    """A failed GPU test's reason, printed as it fails: device runs have a hard time limit, and a run cut by it never
    reaches pytest's end-of-session report (a session lost four failures' reasons that way)."""
    if report.failed and 'gpu' in report.keywords:
        lines = report.longreprtext.splitlines()
        print(f'\nFAILED {report.nodeid} ({report.when}):\n' + '\n'.join(lines[-25:]), flush=True)
