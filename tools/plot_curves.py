#!/usr/bin/env python
"""Plot the loss and metric curves of mmengine training runs as PNG files.

    python tools/plot_curves.py WORK_DIR [WORK_DIR ...] [--out-dir DIR]

Reads the JSON scalars that mmengine's LocalVisBackend writes during training
(``<work_dir>/<timestamp>/vis_data/scalars.json``, one JSON object a line; the latest run that trained is used) and
writes ``loss_curve.png`` (every ``*loss*`` scalar and the learning rate against the iteration) and
``metric_curve.png`` (the validation metrics against the epoch or iteration they were measured at) into the work dir,
or into ``--out-dir/<work dir name>_*.png``. Needs matplotlib only (Agg backend, no display).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import os.path as osp
import sys

# scalars every record carries that are timings or counters, not losses or metrics
_BOOKKEEPING = {'step', 'epoch', 'iter', 'time', 'data_time', 'memory', 'lr', 'base_lr', 'grad_norm'}


class CurveError(ValueError):
    """A work dir without readable training scalars."""


def find_scalars(work_dir: str) -> str:
    """The ``scalars.json`` of the latest run under ``work_dir`` that logged training iterations."""
    if not osp.isdir(work_dir):
        raise CurveError(f'work dir not found: {work_dir}')
    candidates = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')), reverse=True)
    for path in candidates:  # timestamps sort by time; test-only runs have no training records
        train, _ = read_scalars(path)
        if train:
            return path
    raise CurveError(f'no training scalars under {work_dir}: expected <work_dir>/<timestamp>/vis_data/scalars.json '
                     f'from a run with vis_backends=[dict(type="LocalVisBackend")]'
                     + (f' (found {len(candidates)} without training records)' if candidates else ''))


def read_scalars(path: str) -> tuple[list[dict], list[dict]]:
    """Split mmengine's JSON-lines scalars into training records (they carry ``lr``) and validation records."""
    train, val = [], []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except ValueError as e:
                raise CurveError(f'{path}:{number} is not a JSON object: {e}') from None
            if not isinstance(record, dict) or 'step' not in record:
                raise CurveError(f'{path}:{number} has no "step"; not an mmengine scalars file')
            (train if 'lr' in record else val).append(record)
    return train, val


def _numeric(record: dict, key: str) -> bool:
    return isinstance(record.get(key), (int, float)) and not isinstance(record.get(key), bool)


def loss_keys(train: list[dict]) -> list[str]:
    keys = dict.fromkeys(k for r in train for k in r if 'loss' in k and _numeric(r, k))
    return sorted(keys, key=lambda k: (k != 'loss', k))  # the total first


def metric_keys(val: list[dict]) -> list[str]:
    return list(dict.fromkeys(k for r in val for k in r if k not in _BOOKKEEPING and _numeric(r, k)))


def plot_run(scalars_path: str, out_prefix: str, title: str) -> list[str]:
    """Write ``<out_prefix>loss_curve.png`` and, when the run validated, ``<out_prefix>metric_curve.png``."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    train, val = read_scalars(scalars_path)
    written = []
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    steps = [r['step'] for r in train]
    for key in loss_keys(train):
        points = [(r['step'], r[key]) for r in train if _numeric(r, key)]
        ax.plot(*zip(*points), label=key, linewidth=2.0 if key == 'loss' else 1.2)
    ax.set_xlabel('iteration')
    ax.set_ylabel('loss')
    ax.set_title(f'{title}: training loss')
    ax.grid(alpha=0.3)
    lr_points = [(r['step'], r['lr']) for r in train if _numeric(r, 'lr')]
    if lr_points:
        lr_ax = ax.twinx()
        lr_ax.plot(*zip(*lr_points), color='0.5', linestyle='--', linewidth=1.0, label='lr')
        lr_ax.set_ylabel('learning rate', color='0.4')
        lr_ax.ticklabel_format(axis='y', style='sci', scilimits=(-2, 2))
        handles = ax.get_legend_handles_labels()[0] + lr_ax.get_legend_handles_labels()[0]
        ax.legend(handles=handles, loc='upper right', fontsize=8)
    else:
        ax.legend(loc='upper right', fontsize=8)
    if steps:
        ax.set_xlim(0, max(steps))
    fig.tight_layout()
    path = f'{out_prefix}loss_curve.png'
    fig.savefig(path)
    plt.close(fig)
    written.append(path)

    keys = metric_keys(val)
    if keys:
        # epoch-based loops log validation at the epoch, iteration-based ones at the iteration
        by_epoch = any('epoch' in r for r in train) and max(r['step'] for r in val) <= max(
            (r.get('epoch', 0) for r in train), default=0)
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
        for key in keys:
            points = [(r['step'], r[key]) for r in val if _numeric(r, key)]
            ax.plot(*zip(*points), marker='o', label=key)
        ax.set_xlabel('epoch' if by_epoch else 'iteration')
        ax.set_ylabel('metric')
        ax.set_title(f'{title}: validation metrics')
        ax.grid(alpha=0.3)
        ax.legend(loc='best', fontsize=8)
        fig.tight_layout()
        path = f'{out_prefix}metric_curve.png'
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('work_dirs', nargs='+', help='mmengine work dirs (tools/train.py --work-dir)')
    parser.add_argument('--out-dir', help='write <out-dir>/<work dir name>_{loss,metric}_curve.png instead')
    return parser.parse_args(argv)


def main(argv=None) -> list[str]:
    args = parse_args(argv)
    written = []
    try:
        for work_dir in args.work_dirs:
            scalars = find_scalars(work_dir)
            name = osp.basename(osp.normpath(work_dir))
            if args.out_dir:
                os.makedirs(args.out_dir, exist_ok=True)
                prefix = osp.join(args.out_dir, f'{name}_')
            else:
                prefix = osp.join(work_dir, '')
            for path in plot_run(scalars, prefix, name):
                print(f'{name}: {path}')
                written.append(path)
    except CurveError as e:
        print(f'plot_curves.py: error: {e}', file=sys.stderr)
        raise SystemExit(2) from None
    return written


if __name__ == '__main__':
    main()
