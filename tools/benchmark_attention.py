"""Benchmark the focused-linear-attention core on a GPU: official formulation (eager fp32, eager AMP bf16),
torch.compile of the exact path, and the fused Triton op, side by side in one table.

For each shape and method: forward and forward+backward median time (CUDA events), peak memory above the inputs
during forward+backward, achieved bytes/s over the bytes that must move, and time over the memory floor
(those bytes at the copy bandwidth measured in the same run). Bytes that must move, in the method's dtype:
forward reads q, k, v and writes out (4 BNC); backward reads q, k, v, dout and writes dq, dk, dv (7 BNC).

    python tools/benchmark_attention.py                     # all shapes, all methods
    python tools/benchmark_attention.py --shapes swin_s1 --methods triton --reps 50
"""
import argparse
import datetime
import gc
import statistics
import time

import torch

from linattn_vision.ops.focused_linear import focused_linear_attention, focused_linear_attention_reference

SHAPES = {  # name: (B, N, C, heads)
    'swin_s1': (128, 3136, 96, 3),
    'swin_s2': (128, 784, 192, 6),
    'pvt_s1': (128, 3136, 64, 1),
    'det_s1': (2, 200 * 336, 96, 3),
}


def official_formulation(q, k, v, scale, pos, num_heads, focusing_factor=3):
    """The FLatten FocusedLinearAttention core as the official code writes it (dwc and proj left out), in its own
    order of operations: the (N ** -0.5) split of 1/N, per-token norms over all C. tests/ops checks the reference
    against it."""
    B, N, C = q.shape
    k = k + pos
    q = torch.nn.functional.relu(q) + 1e-6
    k = torch.nn.functional.relu(k) + 1e-6
    s = torch.nn.functional.softplus(scale)
    q, k = q / s, k / s
    q_norm, k_norm = q.norm(dim=-1, keepdim=True), k.norm(dim=-1, keepdim=True)
    q, k = q ** focusing_factor, k ** focusing_factor
    q = (q / q.norm(dim=-1, keepdim=True)) * q_norm
    k = (k / k.norm(dim=-1, keepdim=True)) * k_norm
    q, k, v = (t.reshape(B, N, num_heads, -1).permute(0, 2, 1, 3) for t in (q, k, v))
    z = 1 / (q @ k.mean(dim=-2, keepdim=True).transpose(-2, -1) + 1e-6)
    kv = (k.transpose(-2, -1) * (N ** -0.5)) @ (v * (N ** -0.5))
    return (q @ kv * z).transpose(1, 2).reshape(B, N, C)


def _official_amp(*args):
    with torch.autocast('cuda', dtype=torch.bfloat16):
        return official_formulation(*args)


_compiled_reference = None


def _compiled_exact(*args):
    global _compiled_reference
    if _compiled_reference is None:
        _compiled_reference = torch.compile(focused_linear_attention_reference)
    return _compiled_reference(*args)


METHODS = {  # name: (callable, activation dtype)
    'official eager fp32': (official_formulation, torch.float32),
    'official eager AMP bf16': (_official_amp, torch.bfloat16),
    'compile exact bf16': (_compiled_exact, torch.bfloat16),
    'triton bf16': (focused_linear_attention, torch.bfloat16),
}


def copy_bandwidth(nbytes=2 << 30, reps=20):
    """Device-to-device copy, counting bytes read plus written, bytes/s (median)."""
    src = torch.empty(nbytes // 2, dtype=torch.uint8, device='cuda').random_()
    dst = torch.empty_like(src)
    times = time_cuda(lambda: dst.copy_(src), reps=reps)
    return 2 * src.numel() / (statistics.median(times) * 1e-3)


def time_cuda(fn, reps=30, warmup=5):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


def make_inputs(B, N, C, dtype, seed=0):
    gen = torch.Generator(device='cuda').manual_seed(seed)
    q, k, v = (torch.randn(B, N, C, device='cuda', generator=gen).to(dtype).requires_grad_() for _ in range(3))
    scale = (torch.randn(1, 1, C, device='cuda', generator=gen) * 0.5).requires_grad_()  # fp32 parameters,
    pos = (torch.randn(1, N, C, device='cuda', generator=gen) * 0.1).requires_grad_()  # as in a model under AMP
    dout = torch.randn(B, N, C, device='cuda', generator=gen).to(dtype)
    return (q, k, v, scale, pos), dout


def forward_backward(fn, dtype, B, N, C, heads):
    """(inputs, a call of fn's forward + backward on fresh inputs of this shape)."""
    inputs, dout = make_inputs(B, N, C, dtype)

    def fwd_bwd():
        out = fn(*inputs, heads)
        torch.autograd.grad(out, inputs, dout)
    return inputs, fwd_bwd


def bench_one(fn, dtype, B, N, C, heads, reps):
    inputs, fwd_bwd = forward_backward(fn, dtype, B, N, C, heads)
    with torch.no_grad():
        fwd_times = time_cuda(lambda: fn(*inputs, heads), reps=reps)
    fwdbwd_times = time_cuda(fwd_bwd, reps=reps)
    # drop anything a previous method left for the garbage collector, so the baseline holds the inputs only
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fwd_bwd()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    return statistics.median(fwd_times), statistics.median(fwdbwd_times), peak


def host_time(fn, dtype, C, heads, reps=200):
    """Wall time per call (us) of forward and of forward+backward at a tiny size (B=1, N=64), where the GPU work
    is a few microseconds: the host's cost of one call (Python, dispatch, launches), which bounds a model's eager
    speed when it is higher than the call's GPU time."""
    inputs, fwd_bwd = forward_backward(fn, dtype, 1, 64, C, heads)
    results = []
    for call in (lambda: fn(*inputs, heads), fwd_bwd):
        for _ in range(10):
            call()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(reps):
            call()
        torch.cuda.synchronize()
        results.append((time.perf_counter() - start) / reps * 1e6)
    return results


PASS_KERNELS = {'fwd_state': '_fwd_state_kernel', 'fwd_out': '_fwd_out_kernel', 'bwd_q': '_bwd_q_kernel',
                'bwd_kv': '_bwd_kv_kernel'}


def profile_calls(fn, reps, cpu=False):
    """The torch profiler over reps calls of fn() after 3 warm-up calls (CUDA activity, and CPU if asked)."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    activities = [torch.profiler.ProfilerActivity.CUDA] + ([torch.profiler.ProfilerActivity.CPU] if cpu else [])
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(reps):
            fn()
        torch.cuda.synchronize()
    return prof


def kernel_times(fn, reps):
    """Mean CUDA time (ms) of each of the op's four kernels in fn(), over reps calls."""
    times = {}
    for evt in profile_calls(fn, reps).key_averages():
        for name, kernel in PASS_KERNELS.items():
            if kernel in evt.key:
                times[name] = evt.device_time_total / max(1, evt.count) / 1e3
    return times


def sweep(shapes, reps, configs):
    """Times every kernel under each launch configuration (applied to all four passes), with the compiler's
    register and spill counts, then prints the best configuration per pass."""
    from linattn_vision.ops.focused_linear import kernels
    kernels.COMPILE_STATS = {}
    chosen = {}
    for shape in shapes:
        _, fwd_bwd = forward_backward(focused_linear_attention, torch.bfloat16, *SHAPES[shape])
        best = {}
        for block_n, warps, splits_per_sm, stages in configs:
            cfg = dict(BLOCK_N=block_n, num_warps=warps, splits_per_sm=splits_per_sm, num_stages=stages)
            kernels.CONFIG_OVERRIDE.clear()
            kernels.CONFIG_OVERRIDE['all'] = cfg
            label = f'BLOCK_N={block_n:3d} warps={warps} splits/SM={splits_per_sm} stages={stages}'
            try:
                times = kernel_times(fwd_bwd, reps)
            except Exception as exc:  # a configuration the compiler rejects (registers, shared memory)
                print(f'sweep {shape} {label}: {type(exc).__name__}: {str(exc)[:120]}', flush=True)
                continue
            cells = []
            for name in PASS_KERNELS:
                regs, spills = kernels.COMPILE_STATS.get(name, (-1, -1))
                cells.append(f'{name} {times.get(name, float("nan")):.3f} ({regs}r/{spills}s)')
                if name in times and times[name] < best.get(name, (1e9,))[0]:
                    best[name] = (times[name], label, cfg)
            print(f'sweep {shape} {label}: ' + ' | '.join(cells) + f' | sum {sum(times.values()):.3f} ms',
                  flush=True)
        for name, (t, label, cfg) in best.items():
            print(f'best {shape} {name}: {t:.3f} ms at {label}', flush=True)
        chosen[shape] = {name: cfg for name, (t, label, cfg) in best.items()}
    kernels.CONFIG_OVERRIDE.clear()
    kernels.COMPILE_STATS = None
    return chosen


def profile_shape(shape, reps):
    """Every CUDA kernel of the Triton op's forward+backward on one shape (where the time outside the four
    kernels goes: partial sums, dpos, softplus, autograd bookkeeping)."""
    _, fwd_bwd = forward_backward(focused_linear_attention, torch.bfloat16, *SHAPES[shape])
    prof = profile_calls(fwd_bwd, reps, cpu=True)
    print(f'# profile {shape}, {reps} forward+backward calls')
    print(prof.key_averages().table(sort_by='device_time_total', row_limit=14, max_name_column_width=40))


SWEEP_CONFIGS = [(bn, w, spm, st) for bn in (16, 32, 64) for w in (4, 8) for spm in (2, 8) for st in (2, 3)]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--shapes', nargs='+', default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument('--methods', nargs='+', default=list(METHODS), choices=list(METHODS))
    parser.add_argument('--reps', type=int, default=30)
    parser.add_argument('--profile', action='store_true',
                        help='print the torch profiler table of one Triton forward+backward per shape (all kernels)')
    parser.add_argument('--host', action='store_true',
                        help="also print each method's host time per call (wall time at B=1, N=64)")
    parser.add_argument('--autograd-main-thread', action='store_true',
                        help='run backward passes on the calling thread (torch.autograd.set_multithreading_enabled'
                             '(False)): no hand-off to the autograd engine\'s device thread, less host time per call')
    parser.add_argument('--sweep-configs', nargs='+', metavar='BLOCK_N,WARPS,SPLITS_PER_SM,STAGES',
                        help='launch configurations for --sweep (default: a 24-point grid)')
    parser.add_argument('--apply-best', action='store_true',
                        help='time the Triton rows of swept shapes with the best configuration per pass')
    parser.add_argument('--sweep', nargs='*', default=[], choices=list(SHAPES),
                        help='first time the Triton op on these shapes under several launch configurations')
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit('benchmark_attention.py needs a CUDA device')
    from linattn_vision.ops.focused_linear import kernels  # (launch overrides; needs triton)
    if args.autograd_main_thread:
        torch.autograd.set_multithreading_enabled(False)

    bw = copy_bandwidth()
    device = torch.cuda.get_device_name()
    threading = 'backward on the calling thread' if args.autograd_main_thread else 'backward on autograd\'s thread'
    print(f'# {device}, torch {torch.__version__}, {datetime.date.today()}, copy bandwidth {bw / 1e12:.2f} TB/s '
          f'(read + write), {threading}', flush=True)
    chosen = {}
    if args.sweep:
        configs = ([tuple(int(x) for x in c.split(',')) for c in args.sweep_configs] if args.sweep_configs
                   else SWEEP_CONFIGS)
        chosen = sweep(args.sweep, args.reps, configs)
    if args.profile:
        for shape in args.shapes:
            profile_shape(shape, args.reps)
    if args.host:
        print('# host time per call (us; wall time at B=1, N=64, the GPU work is a few microseconds)')
        for shape in args.shapes:
            _, _, C, heads = SHAPES[shape]
            for method in args.methods:
                fn, dtype = METHODS[method]
                fwd_us, fwdbwd_us = host_time(fn, dtype, C, heads)
                print(f'host {shape:8} {method:24} fwd {fwd_us:7.1f} us   fwd+bwd {fwdbwd_us:7.1f} us', flush=True)
    header = (f'| {"shape":8} | {"method":24} | {"fwd ms":>7} | {"fwd+bwd ms":>10} | {"peak MiB":>8} | {"min MiB":>7} '
              f'| {"fwd TB/s":>8} | {"f+b TB/s":>8} | {"fwd/floor":>9} | {"f+b/floor":>9} |')
    rows = [header, '|' + '|'.join('-' * (len(c)) for c in header.split('|')[1:-1]) + '|']
    for shape in args.shapes:
        B, N, C, heads = SHAPES[shape]
        for method in args.methods:
            fn, dtype = METHODS[method]
            elem = torch.finfo(dtype).bits // 8
            fwd_bytes, fwdbwd_bytes = 4 * B * N * C * elem, 11 * B * N * C * elem
            min_bytes = 4 * B * N * C * elem + 4 * (N * C + C)  # out, dq, dk, dv; fp32 dpos, dscale
            best_configs = chosen.get(shape) if args.apply_best and method == 'triton bf16' else None
            if best_configs:
                kernels.CONFIG_OVERRIDE.update(best_configs)
                print(f'# {shape} triton launch configurations: {best_configs}', flush=True)
            try:
                fwd, fwdbwd, peak = bench_one(fn, dtype, B, N, C, heads, args.reps)
            except torch.cuda.OutOfMemoryError:
                rows.append(f'| {shape:8} | {method:24} | out of memory |')
                torch.cuda.empty_cache()
                continue
            row = (f'| {shape:8} | {method:24} | {fwd:7.3f} | {fwdbwd:10.3f} | {peak / 2**20:8.0f} '
                   f'| {min_bytes / 2**20:7.0f} '
                   f'| {fwd_bytes / fwd / 1e9:8.2f} | {fwdbwd_bytes / fwdbwd / 1e9:8.2f} '
                   f'| {fwd / (fwd_bytes / bw * 1e3):9.2f} | {fwdbwd / (fwdbwd_bytes / bw * 1e3):9.2f} |')
            rows.append(row)
            print(row, flush=True)
            kernels.CONFIG_OVERRIDE.clear()
            torch.cuda.empty_cache()
    print('\n'.join(['', f'# {device}, {datetime.date.today()}, floor = bytes that must move / '
                     f'{bw / 1e12:.2f} TB/s; peak = max allocated above the inputs during fwd+bwd'] + rows))


if __name__ == '__main__':
    main()
