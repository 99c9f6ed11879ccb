"""Whole-model speed and memory on one GPU: this toolkit's FLatten / Agent models against timm baselines.

    python tools/benchmark_models.py                       # the default model list, eager
    python tools/benchmark_models.py --compile flatten_swin_t swin_tiny_patch4_window7_224
    python tools/benchmark_models.py --models flatten_swin_t agent_swin_t --nan-steps 200
    python tools/benchmark_models.py --graph              # also inference replayed from CUDA graphs
    python tools/benchmark_models.py --native-layer-norm flatten_swin_t   # A/B of the backbones' fused LayerNorm
    python tools/benchmark_models.py --layer-norm-ab flatten_swin_t swin_tiny_patch4_window7_224   # interleaved A/B

Prints one table, every model measured in the same run (so the numbers compare):
  - inference images/s, batch 64 at 224 (whole classifier, bf16 autocast)
  - backbone-only inference images/s, batch 1 at 1024x1024 and 2048x2048 (forward_features, bf16 autocast)
  - training images/s, batch 64 at 224 (forward + backward + AdamW step, bf16 autocast) and its peak memory
and, with --compile, the 224 settings for the named models under torch.compile (--compile-cudagraphs: with
mode='reduce-overhead', the compiled graphs replayed from CUDA graphs; --compile-cpp-wrapper: inductor's C++ wrapper,
which launches the compiled graphs' kernels without Python); with --graph, the inference
settings replayed from CUDA graphs (the GPU's time without the host's launch overhead, which bounds batch 1);
with --native-layer-norm, this toolkit's models with their fused inference LayerNorm turned off (rows
'native-ln'); with --fused-layer-norm, any model with its LayerNorms swapped for that one (rows 'fused-ln').
A model's rows are measured one after another, so host-speed drift during a run falls between models.
--layer-norm-ab MODEL... prints instead the fused LayerNorm's interleaved A/B: per model and setting, one model with
every LayerNorm the fused one, called alternately with the fused path off and on, eager and replayed from CUDA graphs
(robust to host-speed drift, which moves eager rows of this table by up to 2x on the lent machine).
--no-eager drops the eager rows and --training-only measures the training columns alone: an A/B of two code trees
on one machine start is then one compile per row, e.g. with each tree first on PYTHONPATH in turn:
    PYTHONPATH=TREE python tools/benchmark_models.py --models agent_swin_t --no-eager --training-only \
        --compile-cudagraphs
--nan-steps N trains each of this toolkit's models N steps on one fixed synthetic batch under bf16 autocast
(--nan-dtypes bf16 fp16: also fp16 with a GradScaler; --nan-only: no speed table) and reports the last loss, the
largest |grad| seen, the steps the fp16 scaler skipped and whether any loss or applied step's gradient was NaN/inf.
Times are medians of CUDA-event timings; peak memory is torch's max allocated memory during the measurement.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import traceback

import torch

# the checkout as a fallback: a linattn_vision on PYTHONPATH comes first (A/B runs against another copy of the code)
sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# and tools/ itself (as a script it is sys.path[0] already; loaded as a module, e.g. by the tests, it is not)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import timm  # noqa: E402

import linattn_vision  # noqa: E402,F401  (registers the models)
from linattn_vision.layers import fused_layer_norm  # noqa: E402
from benchmark_attention import time_cuda  # noqa: E402

OURS = ['flatten_swin_t', 'agent_swin_t', 'flatten_pvt_t', 'agent_pvt_t', 'flatten_cswin_t']
BASELINES = ['swin_tiny_patch4_window7_224', 'pvt_v2_b1', 'deit_tiny_patch16_224']


def create(name: str, img_size: int | None = None, **kwargs):
    """timm baselines with a fixed grid need the size at creation; this toolkit's models take any size."""
    if img_size is not None and img_size != 224:
        if name.startswith('swin_'):
            kwargs['img_size'] = img_size
        elif name.startswith(('deit_', 'vit_')):
            kwargs['dynamic_img_size'] = True
    return timm.create_model(name, **kwargs)


def build(name: str, mode: str = 'eager', img_size: int | None = None) -> torch.nn.Module:
    """The model on the GPU; mode 'fused-ln': with its LayerNorms swapped for linattn_vision's fused LayerNorm."""
    model = create(name, img_size=img_size).cuda()
    if mode == 'fused-ln':
        from linattn_vision.layers import fuse_layer_norms
        fuse_layer_norms(model)
    return model


def channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """Convolutions in channels_last; Module.to(memory_format=...) refuses the 5-D agent-bias parameters."""
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.to(memory_format=torch.channels_last)
    return model


def cuda_time(fn, warmup: int, iters: int) -> float:
    """Median milliseconds of fn() by CUDA events (the op benchmark's timer)."""
    return statistics.median(time_cuda(fn, reps=iters, warmup=warmup))


def capture_graph(fn):
    """fn (no arguments, fixed inputs) captured in a CUDA graph after a warm-up on a side stream; returns replay.
    Removes the host's launch overhead, so the time is the GPU's work alone."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


# table modes that torch.compile the model, and torch.compile's arguments for each ('reduce-overhead': CUDA graphs;
# cpp_wrapper: inductor's compiled graphs launch their kernels from generated C++ instead of Python)
COMPILE_MODES = {'compile': {}, 'compile-cg': {'mode': 'reduce-overhead'},
                 'compile-cpp': {'options': {'cpp_wrapper': True}}}


def measure_inference(name, batch, size, features_only, mode, warmup, iters):
    """mode: 'eager', 'compile' (torch.compile), 'compile-cg' (torch.compile, mode='reduce-overhead'),
    'compile-cpp' (torch.compile with inductor's C++ wrapper), 'graph'
    (eager model replayed from a CUDA graph), 'fused-ln' (eager, LayerNorms swapped for the fused one) or
    'native-ln' (eager; the caller turns the fused path off)."""
    model = channels_last(build(name, mode, img_size=size).eval())
    forward = model.forward_features if features_only else model
    if mode in COMPILE_MODES:
        forward = torch.compile(forward, **COMPILE_MODES[mode])
    x = torch.randn(batch, 3, size, size, device='cuda').to(memory_format=torch.channels_last)

    def step():
        # (no autocast weight cache: a captured graph must not depend on it)
        with torch.inference_mode(), torch.autocast('cuda', dtype=torch.bfloat16, cache_enabled=mode != 'graph'):
            forward(x)
    torch.cuda.reset_peak_memory_stats()
    if mode == 'graph':
        step = capture_graph(step)
    ms = cuda_time(step, warmup, iters)
    return batch * 1000 / ms, torch.cuda.max_memory_allocated() / 2**30


def measure_training(name, batch, size, mode, warmup, iters):
    model = channels_last(build(name, mode).train())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05, fused=True)
    forward = torch.compile(model, **COMPILE_MODES[mode]) if mode in COMPILE_MODES else model
    x = torch.randn(batch, 3, size, size, device='cuda').to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device='cuda')

    def step():
        with torch.autocast('cuda', dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(forward(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    torch.cuda.reset_peak_memory_stats()
    ms = cuda_time(step, warmup, iters)
    return batch * 1000 / ms, torch.cuda.max_memory_allocated() / 2**30


AUTOCAST_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}


def nan_check(model, steps, dtype=torch.bfloat16, batch=32, size=224, num_classes=1000, init_scale=2.0 ** 16):
    """Train ``model`` ``steps`` steps on one fixed batch under autocast to ``dtype`` (AdamW 5e-4, gradients clipped
    to norm 5), fp16 with a GradScaler as AMP training needs. Returns the first and last loss, the largest |grad|
    of the applied steps (unscaled, before clipping), how many steps the fp16 scaler skipped (their scaled gradients
    overflowed, which it handles by lowering the scale) and whether every loss and every applied step's gradients
    were finite."""
    device = next(model.parameters()).device
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.05)
    scaler = torch.amp.GradScaler(device.type, init_scale=init_scale, enabled=dtype == torch.float16)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, num_classes, (batch,), device=device)
    max_grad, first_loss, loss, finite, skipped = 0.0, None, None, True, 0
    for _ in range(steps):
        with torch.autocast(device.type, dtype=dtype):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        grad_max = torch.stack([p.grad.abs().max() for p in model.parameters() if p.grad is not None]).max()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        scale = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        first_loss = loss.item() if first_loss is None else first_loss
        finite = finite and bool(torch.isfinite(loss))
        if scaler.get_scale() < scale:  # the scaler found inf/NaN in the scaled gradients and skipped the step
            skipped += 1
        else:
            max_grad = max(max_grad, grad_max.item())
            finite = finite and bool(torch.isfinite(grad_max))
    return first_loss, loss.item(), max_grad, skipped, finite


def fmt(value, spec='.0f'):
    return value if isinstance(value, str) else format(value, spec)


def run_guarded(fn, *args):
    try:
        return fn(*args)
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        return 'OOM', 'OOM'
    except Exception as e:  # a model that cannot run a setting: say so in the table, keep measuring the rest
        torch.cuda.empty_cache()
        # the whole traceback on stderr (where in the model it failed), one line in the table's stream
        traceback.print_exc(file=sys.stderr)
        print(f'# {fn.__name__}{args[:3]}: {type(e).__name__}: {str(e).splitlines()[0][:200]}', file=sys.stderr)
        return f'error: {type(e).__name__}', '-'


def measure_row(name: str, mode: str, args) -> list[str]:
    """One table row: the model's 224 inference, backbone-only batch-1 sizes and 224 training settings."""
    torch._dynamo.reset()
    skip = ('-', '-')
    infer, infer_mem = skip if args.training_only else run_guarded(
        measure_inference, name, args.batch, 224, False, mode, 3, args.iters)
    # compiled rows measure the 224 settings only: each large size is another compile of the whole model
    big = [skip if mode in COMPILE_MODES or args.training_only else
           run_guarded(measure_inference, name, 1, s, True, mode, 2, max(5, args.iters // 2))
           for s in args.sizes]
    torch._dynamo.reset()
    # training is not captured in a graph (the optimizer step and autograd would need a static setup)
    train, train_mem = ('-', '-') if mode == 'graph' else run_guarded(
        measure_training, name, args.batch, 224, mode, 3, args.iters)
    return ([name, mode, fmt(infer), fmt(infer_mem, '.2f')]
            + [fmt(b[0], '.2f') for b in big] + [fmt(b[1], '.2f') for b in big]
            + [fmt(train), fmt(train_mem, '.2f')])


def layer_norm_ab(names, settings=((1, 1024), (1, 2048), (64, 224)), rounds=10, calls=10):
    """Interleaved A/B of the fused LayerNorm; ms per call, median over rounds of `calls` calls each."""
    print(f'# {torch.cuda.get_device_name()}, torch {torch.__version__}, {time.strftime("%Y-%m-%d")}: '
          f'ms per call, median of {rounds} alternating rounds of {calls} (bb = forward_features)')
    print('| model | setting | eager native | eager fused | graph native | graph fused |')
    print('|---|---|---|---|---|---|')
    for name in names:
        for batch, size in settings:
            # timm's models get the fused module swapped in; with it off they run torch's LayerNorm as built
            model = channels_last(build(name, 'fused-ln', img_size=size).eval())
            forward = model.forward_features if batch == 1 else model
            x = torch.randn(batch, 3, size, size, device='cuda').to(memory_format=torch.channels_last)

            def step(cache=True):
                with torch.inference_mode(), torch.autocast('cuda', dtype=torch.bfloat16, cache_enabled=cache):
                    forward(x)
            calls_of = {}
            for fused in (False, True):
                with fused_layer_norm(fused):
                    calls_of['eager', fused] = step
                    calls_of['graph', fused] = capture_graph(lambda: step(cache=False))
            times = {key: [] for key in calls_of}
            for _ in range(rounds):
                for key, fn in calls_of.items():
                    with fused_layer_norm(key[1]):
                        times[key].append(wall_ms(fn, calls))
            cells = [f'{statistics.median(times[key]):.3f}' for key in
                     (('eager', False), ('eager', True), ('graph', False), ('graph', True))]
            setting = f'{"bb " if batch == 1 else ""}b{batch}@{size}'
            print(f'| {name} | {setting} | ' + ' | '.join(cells) + ' |', flush=True)
            del model, calls_of
            torch.cuda.empty_cache()


def wall_ms(fn, calls: int) -> float:
    """Wall milliseconds per call of fn over `calls` calls, the GPU synchronised before and after."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls * 1e3


def measured_rows(args) -> list[tuple[str, str]]:
    """(model, table mode) of every row, grouped by model in the order first named. Each extra mode's option
    absent: no rows; given without names: every model of --models; with names: those models."""
    def chosen(names):
        return [] if names is None else (names or args.models)
    modes = [('eager', [] if args.no_eager else args.models), ('native-ln', chosen(args.native_layer_norm)),
             ('fused-ln', chosen(args.fused_layer_norm)), ('graph', chosen(args.graph)),
             ('compile', chosen(args.compile)), ('compile-cg', chosen(args.compile_cudagraphs)),
             ('compile-cpp', chosen(args.compile_cpp_wrapper))]
    models = dict.fromkeys(name for _, names in modes for name in names)
    return [(name, mode) for name in models for mode, names in modes if name in names]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', nargs='+', default=OURS + BASELINES)
    parser.add_argument('--compile', nargs='*', default=None, metavar='MODEL',
                        help='also measure these models under torch.compile (no names: all)')
    parser.add_argument('--compile-cudagraphs', nargs='*', default=None, metavar='MODEL',
                        help='also measure these models (no names: all) under torch.compile(mode="reduce-overhead"), '
                             'which replays the compiled graphs from CUDA graphs (rows "compile-cg")')
    parser.add_argument('--compile-cpp-wrapper', nargs='*', default=None, metavar='MODEL',
                        help='also measure these models (no names: all) under torch.compile with inductor\'s C++ '
                             'wrapper (options={"cpp_wrapper": True}: the compiled graphs launch their kernels from '
                             'C++, not Python; rows "compile-cpp")')
    parser.add_argument('--graph', nargs='*', default=None, metavar='MODEL',
                        help='also measure inference of these models replayed from CUDA graphs (no names: all)')
    parser.add_argument('--fused-layer-norm', nargs='*', default=None, metavar='MODEL',
                        help='also measure these models (no names: all) with their LayerNorms swapped for '
                             'linattn_vision.layers.LayerNorm (rows "fused-ln"; for timm\'s baselines: this toolkit\'s '
                             'models have it already)')
    parser.add_argument('--native-layer-norm', nargs='*', default=None, metavar='MODEL',
                        help='also measure these models (no names: all) with the fused LayerNorm turned off '
                             '(linattn_vision.layers.fused_layer_norm(False); rows "native-ln")')
    parser.add_argument('--layer-norm-ab', nargs='+', default=None, metavar='MODEL',
                        help='only print the fused LayerNorm\'s interleaved A/B for these models (see above)')
    parser.add_argument('--sizes', nargs='+', type=int, default=[1024, 2048], help='backbone-only batch-1 sizes')
    parser.add_argument('--no-eager', action='store_true',
                        help='no eager rows (--models still names the models of a mode option given bare)')
    parser.add_argument('--training-only', action='store_true',
                        help='measure the training setting only (A/B runs of code trees: one compile per row)')
    parser.add_argument('--batch', type=int, default=64)
    parser.add_argument('--iters', type=int, default=20)
    parser.add_argument('--nan-steps', type=int, default=0)
    parser.add_argument('--nan-only', action='store_true', help='only the --nan-steps runs, no speed table')
    parser.add_argument('--nan-dtypes', nargs='+', choices=sorted(AUTOCAST_DTYPES), default=['bf16'],
                        help='autocast dtypes of the --nan-steps runs')
    parser.add_argument('--time-budget', type=float, default=1e9, help='seconds; later rows say "skipped (time)"')
    parser.add_argument('--autograd-main-thread', action='store_true',
                        help='training backward on the calling thread (torch.autograd.set_multithreading_enabled'
                             '(False)), not autograd\'s device thread')
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit('benchmark_models.py needs a CUDA GPU')
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    # headroom for models whose blocks compile as frames of their own (a graph break in a block recompiles it
    # per stage and per guarded attribute); this toolkit's Swin models trace as one graph (torch._dynamo.explain)
    torch._dynamo.config.recompile_limit = 64
    if args.autograd_main_thread:
        torch.autograd.set_multithreading_enabled(False)
    if args.layer_norm_ab:
        layer_norm_ab(args.layer_norm_ab)
        return
    start = time.time()
    device = torch.cuda.get_device_name()
    threading = ', backward on the calling thread' if args.autograd_main_thread else ''
    print(f'# {device}, torch {torch.__version__}, {time.strftime("%Y-%m-%d")}, bf16 autocast, channels_last'
          f'{threading}')
    header = (['model', 'mode', f'infer img/s b{args.batch}@224', 'infer GiB']
              + [f'bb img/s b1@{s}' for s in args.sizes] + [f'bb GiB @{s}' for s in args.sizes]
              + [f'train img/s b{args.batch}@224', 'train GiB'])
    if not args.nan_only:
        print('| ' + ' | '.join(header) + ' |')
        print('|' + '|'.join('---' for _ in header) + '|')
    failed = []
    for name, mode in [] if args.nan_only else measured_rows(args):
        if time.time() - start > args.time_budget:
            print(f'| {name} | {mode} | skipped (time budget) |')
            continue
        with fused_layer_norm(mode != 'native-ln'):
            cells = measure_row(name, mode, args)
        print('| ' + ' | '.join(cells) + ' |', flush=True)
        failed += failed_settings(header, cells)
    if args.nan_steps:
        print(f'\n# {args.nan_steps}-step autocast training on one fixed batch of 32 (AdamW 5e-4, clip 5; fp16 with '
              f'a GradScaler, whose skipped steps are counted)')
        print('| model | autocast | first loss | last loss | max |grad| | skipped steps | all finite |')
        print('|---|---|---|---|---|---|---|')
        ours = [m for m in args.models if m in OURS or m.startswith(('flatten_', 'agent_'))]
        for name in ours:
            for dtype in args.nan_dtypes:
                torch.manual_seed(0)
                first, last, max_grad, skipped, finite = nan_check(build(name), args.nan_steps,
                                                                   AUTOCAST_DTYPES[dtype])
                print(f'| {name} | {dtype} | {first:.3f} | {last:.4f} | {max_grad:.3g} | {skipped} | {finite} |',
                      flush=True)
                if not finite:
                    failed.append(f'{name} {dtype} training: not finite')
    print(f'# total {time.time() - start:.0f} s')
    if failed:
        # the table is printed whole; the exit status tells scripts (tools/gpu_check.sh) that a setting failed
        sys.exit(f'# {len(failed)} setting(s) failed: ' + '; '.join(failed))


def failed_settings(header: list[str], cells: list[str]) -> list[str]:
    """'model mode: column' for each cell of a table row that says a setting raised (not OOM, which is a result)."""
    return [f'{cells[0]} {cells[1]}: {column}' for column, cell in zip(header, cells) if cell.startswith('error')]


if __name__ == '__main__':
    main()
