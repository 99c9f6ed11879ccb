"""mmengine hooks of this toolkit, registered on mmengine's root HOOKS registry (visible to mmdet, mmseg and the
``linattn_vision`` scope alike) once a config lists ``'linattn_vision.mm.hooks'`` in ``custom_imports``."""
from __future__ import annotations

import sys

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


class EvalProgressBarHook(Hook):
    """A progress bar over the batches of every validation and test run (tqdm when installed, else mmengine's).

    mmengine logs evaluation only every ``LoggerHook.interval`` batches; the bar shows how far an evaluation is and
    how long it has left. Drawn by the main process only, on stderr.
    """
    priority = 'VERY_LOW'

    def __init__(self, min_batches: int = 2):
        self.min_batches = min_batches
        self._bar = None
        self._total = self._done = 0

    def _start(self, runner, mode: str, dataloader) -> None:
        total = len(dataloader)
        self._total, self._done = total, 0
        if not is_main_process() or total < self.min_batches:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            from mmengine.utils import ProgressBar
            self._bar = ProgressBar(total, file=sys.stderr)
            return
        self._bar = tqdm(total=total, desc=mode, unit='batch', file=sys.stderr, dynamic_ncols=True, leave=True)

    def _step(self) -> None:
        if self._bar is not None:
            self._bar.update(1)
            self._done += 1
            if self._done == self._total:  # close before the metric prints its tables
                self._finish()

    def _finish(self) -> None:
        if self._bar is not None:
            if hasattr(self._bar, 'close'):
                self._bar.close()
            else:  # mmengine's bar ends without a newline
                sys.stderr.write('\n')
            self._bar = None

    def before_val_epoch(self, runner) -> None:
        self._start(runner, 'val', runner.val_dataloader)

    def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._step()

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._finish()

    def before_test_epoch(self, runner) -> None:
        self._start(runner, 'test', runner.test_dataloader)

    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._step()

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._finish()


if HOOKS.get('EvalProgressBarHook') is None:  # a re-import under another module path must not fail
    HOOKS.register_module(module=EvalProgressBarHook)

__all__ = ['EvalProgressBarHook']
