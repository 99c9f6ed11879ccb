#!/usr/bin/env python
"""Write the bundled demo datasets (COCO instances, ADE20K folders, ImageFolder) of synthetic shape scenes.

    python tools/make_demo_data.py                       # data/demo, all tasks, default sizes
    python tools/make_demo_data.py --tasks coco --num-train 100 --size 160 --seed 1

Reuses a task folder whose manifest matches the parameters and generator version; ``--force`` rewrites it.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a plain checkout

from linattn_vision.data import (DEFAULT_NUM_TRAIN, DEFAULT_NUM_VAL, DEFAULT_SIZE, DEMO_CLASSES,  # noqa: E402
                                 DEMO_SEG_CLASSES, DEMO_TASKS, make_demo_data)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='data/demo', help='root folder (default: %(default)s)')
    parser.add_argument('--tasks', nargs='+', default=list(DEMO_TASKS), choices=DEMO_TASKS,
                        help='datasets to write (default: all)')
    parser.add_argument('--num-train', type=int, default=DEFAULT_NUM_TRAIN, help='train images per task')
    parser.add_argument('--num-val', type=int, default=DEFAULT_NUM_VAL, help='val images per task')
    parser.add_argument('--size', type=int, default=DEFAULT_SIZE, help='square image side in pixels')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--force', action='store_true', help='regenerate even if a matching cache exists')
    parser.add_argument('--no-progress', action='store_true', help='no progress bars')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        paths = make_demo_data(args.out, tasks=args.tasks, num_train=args.num_train, num_val=args.num_val,
                               size=args.size, seed=args.seed, force=args.force, progress=not args.no_progress)
    except (ValueError, FileExistsError) as error:
        sys.exit(f'make_demo_data: {error}')
    print(f'demo data ready in {time.perf_counter() - start:.1f} s:')
    for task, path in paths.items():
        print(f'  {task:9s} {os.path.abspath(path)}')
    print(f'detection classes: {DEMO_CLASSES}')
    print(f'segmentation classes (reduce_zero_label=True): {DEMO_SEG_CLASSES}')


if __name__ == '__main__':
    main()
