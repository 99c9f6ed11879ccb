"""Top-k accuracy that is exact under DDP: per-sample results gathered by mmengine's BaseMetric.

mmengine's DefaultSampler pads the last rank's share with repeated samples; ``BaseMetric.evaluate(size)`` gathers the
per-sample results of every rank in dataset order and drops the padding, so each image counts exactly once.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from mmengine.evaluator import BaseMetric

from ..registry import METRICS


@METRICS.register_module()
class TopKAccuracy(BaseMetric):
    """Top-1 / top-5 accuracy in percent, reported as ``accuracy/top1`` and ``accuracy/top5``."""

    default_prefix = 'accuracy'

    def __init__(self, topk: Sequence[int] = (1, 5), collect_device: str = 'cpu', prefix: str | None = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.topk = tuple(sorted(set(int(k) for k in topk)))
        if not self.topk or self.topk[0] < 1:
            raise ValueError(f'topk must be positive integers, got {topk}')

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        for sample in data_samples:
            if sample.get('gt_label') is None:
                raise ValueError('TopKAccuracy needs ground-truth labels; the evaluated split has none')
            score = torch.as_tensor(sample['pred_score'])
            k = min(max(self.topk), score.numel())
            top = score.topk(k).indices.tolist()
            gt = int(sample['gt_label'])
            # the 0-based rank of the true class among the top predictions, k when it is not among them
            self.results.append(top.index(gt) if gt in top else k)

    def compute_metrics(self, results: list) -> dict[str, float]:
        ranks = np.asarray(results)
        return {f'top{k}': float((ranks < k).mean() * 100.0) for k in self.topk}
