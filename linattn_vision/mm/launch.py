"""What tools/train.py and tools/test.py share: config handling, scope, launcher, one-line user errors.

One driver for every task: the config's ``default_scope`` says which library builds it ('mmdet', 'mmseg', or
'linattn_vision' for ImageNet classification, which needs only mmengine + timm). Nothing here imports mmdet or mmseg
unless the config's scope is theirs.
"""
from __future__ import annotations

import contextlib
import os
import os.path as osp
import sys
from typing import Iterator, Sequence

import torch

from .checkpoint import trusted_checkpoint_loading  # noqa: F401  (the drivers wrap runner.train/test in it)
from .errors import UserInputError

CLASSIFICATION_SCOPE = 'linattn_vision'
DENSE_SCOPES = ('mmdet', 'mmseg')


def load_config(config: str, cfg_options: dict | None = None, launcher: str = 'none', work_dir: str | None = None):
    """Read ``config``, apply ``--cfg-options``, set launcher and work_dir (default ``work_dirs/<config name>``)."""
    from mmengine.config import Config
    if not osp.isfile(config):
        raise FileNotFoundError(f'config file not found: {config}')
    cfg = Config.fromfile(config)
    cfg.launcher = launcher
    if cfg_options:
        try:
            cfg.merge_from_dict(cfg_options)
        except (TypeError, KeyError, ValueError) as e:  # e.g. a key set inside a value the config has as None
            message = e.args[0] if isinstance(e, KeyError) and e.args else e
            raise UserInputError(f'--cfg-options do not fit {config}: {message}') from e
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config))[0])
    return cfg


def config_scope(cfg) -> str:
    return cfg.get('default_scope') or 'mmengine'


def require_dense_scope(cfg) -> str:
    """The config's scope for tools that measure detectors and segmentors only (a classifier config failed deep
    inside them); a config without default_scope is taken as mmdet's, as mmdet's tools do."""
    scope = cfg.get('default_scope') or 'mmdet'
    if scope not in DENSE_SCOPES:
        raise UserInputError(f"this tool measures detection and segmentation configs (default_scope 'mmdet' or "
                             f"'mmseg'); this config's default_scope is {scope!r} (classifiers: "
                             f"python tools/benchmark_models.py --models MODEL)")
    return scope


def enable_amp(cfg) -> None:
    """Turn the config's OptimWrapper into mmengine's AmpOptimWrapper with a dynamic loss scale."""
    from mmengine.logging import print_log
    wrapper_type = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if wrapper_type == 'AmpOptimWrapper':
        print_log('AMP training is already enabled in the config.', logger='current')
        return
    if wrapper_type != 'OptimWrapper':
        raise UserInputError(f'--amp needs optim_wrapper.type OptimWrapper or AmpOptimWrapper, the config has '
                             f'{wrapper_type!r}')
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    cfg.optim_wrapper.loss_scale = 'dynamic'


# The network parts compiled by --compile / the config's `compile`: a classifier's timm model, a detector's or
# segmentor's backbone and neck (their dense, fixed-shape part; heads compute data-dependent losses).
COMPILED_PARTS = ('model', 'backbone', 'neck')


def add_compile_arguments(parser) -> None:
    """--compile [BACKEND] and --compile-mode MODE, the drivers' switches for compile_network."""
    parser.add_argument('--compile', nargs='?', const='inductor', metavar='BACKEND',
                        help='compile the network with torch.compile (default backend: inductor)')
    parser.add_argument('--compile-mode', choices=['default', 'reduce-overhead', 'max-autotune'],
                        help="torch.compile's mode (implies --compile); reduce-overhead replays the compiled "
                             'network from CUDA graphs')


def take_compile_options(cfg, backend: str | None = None, mode: str | None = None) -> dict | None:
    """torch.compile's keyword arguments for the network, from the config's ``compile`` setting (True or a dict) and
    the command line's backend / mode, or None for no compilation. The setting is removed from ``cfg``: mmengine
    would compile the whole ``train_step`` with it, where the optimizer step recompiles at every learning-rate
    change (its guards hold the float lr), the logging code compiles too, and past the recompile limit the step
    silently runs eager; compile_network compiles the network alone."""
    setting = cfg.pop('compile', None)
    if setting is True:
        setting = {}
    elif setting is False:
        setting = None
    elif setting is not None and not isinstance(setting, dict):
        raise UserInputError(f'the config\'s compile setting must be True, False or a dict of torch.compile '
                             f'arguments, not {setting!r}')
    if setting is None and backend is None and mode is None:
        return None
    options = dict(setting or {})
    if backend is not None:
        options['backend'] = backend
    if mode is not None:
        options['mode'] = mode
    return options


def unwrapped_model(runner):
    """The runner's model itself, inside its DDP (or other mmengine) wrapper if it has one."""
    from mmengine.model import is_model_wrapper
    return runner.model.module if is_model_wrapper(runner.model) else runner.model


def compile_network(runner, options: dict) -> list[str]:
    """``torch.compile`` the network parts of ``runner.model`` (COMPILED_PARTS) in place with ``options``;
    returns their names. nn.Module.compile keeps parameter names, so checkpoints, resume and DDP are unchanged;
    the data preprocessor, loss heads, optimizer step and logging stay eager."""
    from mmengine.logging import print_log
    model = unwrapped_model(runner)
    parts = [name for name in COMPILED_PARTS if isinstance(getattr(model, name, None), torch.nn.Module)]
    if not parts:
        raise UserInputError(f'--compile: {type(model).__name__} has none of the parts it compiles '
                             f'({", ".join(COMPILED_PARTS)})')
    for name in parts:
        getattr(model, name).compile(**options)
    print_log(f'torch.compile({", ".join(f"{k}={v!r}" for k, v in options.items())}) on {", ".join(parts)}; '
              f'the first iterations (and the first validation) are slow while it compiles', logger='current')
    return parts


def apply_resume(cfg, resume: str | None) -> None:
    """``--resume``: 'auto' continues from the work_dir's latest checkpoint, a path from that file."""
    if resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif resume is not None:
        if not osp.isfile(resume):
            raise FileNotFoundError(f'--resume checkpoint not found: {resume}')
        cfg.resume = True
        cfg.load_from = resume


def check_data(cfg, loaders: Sequence[str]) -> None:
    """Fail early, in one line, on a missing data root or a broken annotation file of the given dataloaders."""
    from .errors import check_coco_annotation, check_dataset_cfg
    for loader in loaders:
        loader_cfg = cfg.get(f'{loader}_dataloader')
        if not loader_cfg or cfg.get(f'{loader}_cfg', {}) is None:
            continue
        check_dataset_cfg(loader_cfg.get('dataset'))
        metrics = cfg.get(f'{loader}_evaluator')
        for metric in metrics if isinstance(metrics, (list, tuple)) else [metrics]:
            ann_file = metric.get('ann_file') if hasattr(metric, 'get') else None
            if ann_file:
                check_coco_annotation(ann_file)


def check_inputs(cfg, loaders: Sequence[str]) -> None:
    """One-line failures before anything is built: unknown backbone type, missing data, broken annotations, AMP
    training without an accelerator."""
    from .errors import check_backbone_cfg
    if config_scope(cfg) in DENSE_SCOPES:
        check_backbone_cfg(cfg)
    check_data(cfg, loaders)
    if 'train' in loaders:
        check_amp_device(cfg)


def check_amp_device(cfg) -> None:
    """mmengine's AmpOptimWrapper asserts an accelerator deep inside the runner's build: say so in one line."""
    if (cfg.get('optim_wrapper') or {}).get('type') != 'AmpOptimWrapper':
        return
    from mmengine.device import get_device
    if get_device() == 'cpu':
        raise UserInputError("AMP training (--amp, or optim_wrapper.type='AmpOptimWrapper' in the config) needs a GPU: "
                             "mmengine's AmpOptimWrapper runs on CUDA, NPU, MLU or MUSA devices and this machine has "
                             "none; train without --amp")


def enable_visualization(cfg, scope: str, show: bool, show_dir: str | None, wait_time: float) -> None:
    """``--show`` / ``--show-dir`` for detection and segmentation: switch on the config's visualization hook, as
    mmdet's and mmseg's own tools/test.py do (mmdet saves under ``work_dir/<timestamp>/<show_dir>``, mmseg under the
    visualizer's ``save_dir``)."""
    if scope not in DENSE_SCOPES:
        raise UserInputError(f'--show / --show-dir draw detection and segmentation results; the config\'s '
                             f'default_scope is {scope!r}')
    hook = (cfg.get('default_hooks') or {}).get('visualization')
    if hook is None:
        hook_type = 'DetVisualizationHook' if scope == 'mmdet' else 'SegVisualizationHook'
        raise UserInputError(f'--show / --show-dir need a visualization hook in default_hooks, e.g. '
                             f'visualization=dict(type={hook_type!r})')
    hook['draw'] = True
    if show:
        hook['show'] = True
        hook['wait_time'] = wait_time
    if show_dir:
        if scope == 'mmdet':
            hook['test_out_dir'] = show_dir
        else:
            cfg.visualizer['save_dir'] = show_dir


def add_dump_metric(runner, scope: str, out: str) -> None:
    """``--out``: pickle the predictions next to the metrics (mmdet's DumpDetResults, mmengine's DumpResults)."""
    if not out.endswith(('.pkl', '.pickle')):
        raise UserInputError(f'--out must be a .pkl or .pickle file, got {out}')
    if scope == 'mmdet':
        from mmdet.evaluation import DumpDetResults
        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=out))
    else:
        from mmengine.evaluator import DumpResults
        runner.test_evaluator.metrics.append(DumpResults(out_file_path=out))


def prepare_distributed(cfg) -> None:
    """Make ``--launcher pytorch`` work on CPU-only machines too (gloo, DDP without device ids).

    mmengine's init_dist always calls ``torch.cuda.set_device`` and its default DDP wrapper passes the local rank as
    a CUDA device id; without CUDA the process group is started here (mmengine then skips its own init) and DDP is
    built for CPU modules.
    """
    import torch
    import torch.distributed as dist
    if cfg.launcher == 'none' or torch.cuda.is_available():
        return
    if not dist.is_initialized():
        if cfg.launcher == 'pytorch':
            dist.init_process_group(backend='gloo')
        else:
            raise UserInputError(f'--launcher {cfg.launcher} needs CUDA on this machine; use --launcher pytorch '
                                 f'(torchrun) for CPU runs')
    env_cfg = cfg.get('env_cfg') or {}
    env_cfg.setdefault('dist_cfg', {})['backend'] = 'gloo'
    cfg.env_cfg = env_cfg
    wrapper_cfg = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel', broadcast_buffers=False,
        find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper_cfg['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper_cfg


def finish_distributed() -> None:
    """End a distributed run that has finished: tear the process group down, then exit (status 0) without the
    interpreter's teardown. Called by the drivers' ``__main__`` after a run that returned; does nothing in a
    single-process run.

    Even after destroy_process_group, a gloo process sometimes aborted in that teardown ('terminate called without an
    active exception', no Python frame left: C++ threads still joinable when the runtime is destroyed), and torchrun
    reported a finished evaluation as failed: 3 of 38 runs of the two-process test on a loaded 2-core machine.
    Python's own exit work that matters here (logging handlers, std streams) is flushed first."""
    import logging

    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return
    dist.barrier()
    dist.destroy_process_group()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def build_runner(cfg):
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def _is_registry_miss(error: BaseException) -> bool:
    return isinstance(error, KeyError) and 'registry' in str(error)


@contextlib.contextmanager
def user_errors_as_one_line(prog: str) -> Iterator[None]:
    """Bad input (missing files, checkpoints that do not fit, unknown types) ends the run with one line on stderr
    and exit status 2 instead of a traceback; anything else (a bug) keeps its traceback."""
    from ..checkpoint import CheckpointError
    from .errors import USER_ERRORS
    try:
        yield
    except (*USER_ERRORS, CheckpointError, FileNotFoundError, NotADirectoryError, KeyError) as e:
        if isinstance(e, KeyError) and not (isinstance(e, USER_ERRORS) or _is_registry_miss(e)):
            raise
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f'{prog}: error: {" ".join(str(message).split())}', file=sys.stderr)
        raise SystemExit(2) from None


def set_local_rank(local_rank: int) -> None:
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(local_rank)
