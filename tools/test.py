"""Evaluate a checkpoint with an mmengine config (mmdet's CLI): top-1/top-5, box/mask mAP or mIoU.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out results.pkl] [--show-dir DIR]
        [--compile [BACKEND]] [--compile-mode MODE] [--cfg-options key=value ...] [--launcher none|pytorch|slurm]

Classification configs (``default_scope = 'linattn_vision'``) take this project's mmengine checkpoints, timm /
safetensors files and the official FLatten / Agent releases (``{'model': ..., 'config': CfgNode}``) as they are.
``--show-dir`` draws detection / segmentation results through the config's visualization hook. ``--compile`` /
``--compile-mode`` compile the network as tools/train.py does (the first batches are slow while it compiles).
"""
from __future__ import annotations

import argparse
import os.path as osp

from mmengine.config import DictAction

from linattn_vision.mm import launch


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Evaluate a checkpoint with an mmengine config')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save the evaluation log')
    parser.add_argument('--out', type=str, help='dump predictions to a pickle file (a folder for mmseg)')
    parser.add_argument('--show', action='store_true', help='show prediction results (detection / segmentation)')
    parser.add_argument('--show-dir', help='save drawn predictions under work_dir/<show-dir> (mmdet) or '
                                           '<show-dir> (mmseg)')
    parser.add_argument('--wait-time', type=float, default=2, help='the interval of show (s)')
    launch.add_compile_arguments(parser)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value pairs, e.g. test_dataloader.batch_size=64')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    launch.set_local_rank(args.local_rank)
    return args


def main(argv=None):
    """Run the evaluation; returns the metrics dict."""
    args = parse_args(argv)
    with launch.user_errors_as_one_line('test.py'):
        if not osp.isfile(args.checkpoint):
            raise FileNotFoundError(f'checkpoint file not found: {args.checkpoint}')
        cfg = launch.load_config(args.config, args.cfg_options, args.launcher, args.work_dir)
        scope = launch.config_scope(cfg)
        if args.show or args.show_dir:
            launch.enable_visualization(cfg, scope, args.show, args.show_dir, args.wait_time)
        if args.out and scope == 'mmseg':
            cfg.test_evaluator['output_dir'] = args.out
            cfg.test_evaluator['keep_results'] = True
        # classifiers load the checkpoint themselves (official layouts, key conversion, strict check)
        cfg.load_from = None if scope == launch.CLASSIFICATION_SCOPE else args.checkpoint
        # only on request: a config's compile setting is for training
        compile_options = (launch.take_compile_options(cfg, args.compile, args.compile_mode)
                           if args.compile or args.compile_mode else None)
        launch.check_inputs(cfg, loaders=('test',))
        launch.prepare_distributed(cfg)
        runner = launch.build_runner(cfg)
        if compile_options is not None:
            launch.compile_network(runner, compile_options)
        if scope == launch.CLASSIFICATION_SCOPE:
            from linattn_vision.mm.classification import load_classifier_checkpoint
            load_classifier_checkpoint(launch.unwrapped_model(runner), args.checkpoint, strict=True)
        if args.out and scope != 'mmseg':
            launch.add_dump_metric(runner, scope, args.out)
        with launch.trusted_checkpoint_loading():
            metrics = runner.test()
    return metrics


if __name__ == '__main__':
    main()
    launch.finish_distributed()
