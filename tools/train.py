"""Train a classifier, detector or segmentor from an mmengine config (mmdet's CLI).

    python tools/train.py configs/cls/flatten_swin_t_in1k.py [--work-dir DIR] [--amp]
        [--compile [BACKEND]] [--compile-mode default|reduce-overhead|max-autotune]
        [--resume [CKPT]] [--cfg-options key=value ...] [--launcher none|pytorch|slurm]

``--compile`` (or the config's ``compile = True`` / ``dict(...)`` of torch.compile arguments) compiles the network:
a classifier's timm model, a detector's or segmentor's backbone and neck (linattn_vision.mm.launch.compile_network;
inductor launches the FLatten op's Triton kernels itself). Not mmengine's whole ``train_step``: there the optimizer
step recompiled at every learning-rate change and the logging code compiled too. The first iterations (and the
first validation) are slow while it compiles. ``--compile-mode reduce-overhead`` replays the compiled network from
CUDA graphs, which takes the host's launch cost out of the step. Measured outside this tool (tools/benchmark_models.py,
BENCHMARKS.md session 12, H100, training img/s at batch 64, 224): FLatten-Swin-T eager 1471, compiled 2061,
reduce-overhead 3720; Swin-T 1221, 2386, 3335. Through this tool, reduce-overhead ran on an H100 (session 15: ~2700
img/s, batch 64, with data loading) and on an H200 through training and validation (session 16).

The config's ``default_scope`` picks the library: 'mmdet', 'mmseg', or 'linattn_vision' (ImageNet classification,
mmengine + timm only). Checkpoints of this project load under torch's ``weights_only`` default through an explicit
allowlist (linattn_vision.mm.checkpoint), so ``--resume`` and ``load_from`` work with torch >= 2.6.
"""
from __future__ import annotations

import argparse

from mmengine.config import DictAction

from linattn_vision.mm import launch


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a model from an mmengine config')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--amp', action='store_true', default=False, help='enable automatic mixed precision training')
    launch.add_compile_arguments(parser)
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the learning rate by the global batch size (auto_scale_lr in the config)')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from this checkpoint; without a path, from the latest one in the work_dir')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value pairs, e.g. train_dataloader.batch_size=64')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or --local_rank; torchrun sets LOCAL_RANK
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    launch.set_local_rank(args.local_rank)
    return args


def main(argv=None):
    """Run the training; returns the finished Runner (handy when called from Python)."""
    args = parse_args(argv)
    with launch.user_errors_as_one_line('train.py'):
        cfg = launch.load_config(args.config, args.cfg_options, args.launcher, args.work_dir)
        scope = launch.config_scope(cfg)
        if scope == 'mmdet':
            from mmdet.utils import setup_cache_size_limit_of_dynamo
            setup_cache_size_limit_of_dynamo()
        if args.amp:
            launch.enable_amp(cfg)
        compile_options = launch.take_compile_options(cfg, args.compile, args.compile_mode)
        if args.auto_scale_lr:
            if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
                raise launch.UserInputError('--auto-scale-lr needs auto_scale_lr.base_batch_size in the config')
            cfg.auto_scale_lr.enable = True
        launch.apply_resume(cfg, args.resume)
        launch.check_inputs(cfg, loaders=('train', 'val'))
        launch.prepare_distributed(cfg)
        runner = launch.build_runner(cfg)
        if compile_options is not None:
            launch.compile_network(runner, compile_options)
        with launch.trusted_checkpoint_loading():
            runner.train()
    return runner


if __name__ == '__main__':
    main()
    launch.finish_distributed()
