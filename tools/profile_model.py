"""Where a model's GPU time goes: the torch profiler's CUDA-kernel table for inference or one training step.

    python tools/profile_model.py flatten_swin_t swin_tiny_patch4_window7_224 --size 1024 --batch 1 --features
    python tools/profile_model.py flatten_swin_t --train --batch 64
    python tools/profile_model.py agent_swin_t --size 1024 --features --fused-layer-norm   # LayerNorm A/B
    python tools/profile_model.py flatten_swin_t swin_tiny_patch4_window7_224 --train --compile
    python tools/profile_model.py agent_swin_t --train --compile --inductor-report 3   # why a compiled kernel is slow

bf16 autocast, channels_last convolutions, as in benchmark_models.py. Prints, per model, the kernels sorted by
their own (self) CUDA time over --iters calls, the total, the totals per kernel family (focused op, depthwise conv,
attention, matmul, ... : CATEGORIES), and the wall time per call measured after the profile (a wall time above the
kernels' total means the host bounds the call).
"""
import argparse
import contextlib
import glob
import os
import sys
import time

import torch
from torch.autograd import DeviceType

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmark_attention import profile_calls  # noqa: E402
from benchmark_models import build, channels_last, wall_ms  # noqa: E402

from linattn_vision.layers import fused_layer_norm  # noqa: E402


# Kernel families, first match wins (the profiler's kernel names: torch's native kernels, cuBLAS/cuDNN/CUTLASS,
# this toolkit's Triton kernels, inductor's generated triton_* kernels); the per-family totals of two models side by
# side show where one loses time to the other.
CATEGORIES = (
    ('focused op', ('_fwd_state_kernel', '_fwd_out_kernel', '_bwd_q_kernel', '_bwd_kv_kernel')),
    ('depthwise conv', ('conv_depthwise', '_dwconv')),
    ('attention (SDPA / agent)', ('fmha', 'flash', 'attention', 'sdpa', 'softmax', '_aggregate_', '_broadcast_')),
    ('matmul', ('gemm', 'xmma', 'cutlass', 'nvjet', 'sm90_', 'sm80_')),
    ('layer norm', ('layer_norm', 'LayerNorm', '_ln_')),
    ('optimizer', ('multi_tensor', 'adam', 'Adam')),
    ('reductions', ('reduce_kernel', 'reduction')),
    ('copies', ('copy', 'Copy', 'cat_', 'CatArray')),
    ('inductor fused (triton_*)', ('triton_',)),
    ('elementwise', ('elementwise', 'vectorized', 'unrolled')),
)


def category(kernel_name: str) -> str:
    """The family of a profiled kernel, by name (CATEGORIES), else 'other'."""
    for label, patterns in CATEGORIES:
        if any(p in kernel_name for p in patterns):
            return label
    return 'other'


def category_totals(events, iters) -> dict:
    """{family: (ms per call, kernel launches per call)} over profiled events, largest first. Only events with a
    self CUDA time count: the kernels (the torch ops that launch them hold theirs only as children's time)."""
    totals = {}
    for e in events:
        if e.self_device_time_total <= 0:
            continue
        family = category(e.key)
        ms, count = totals.get(family, (0.0, 0))
        totals[family] = (ms + e.self_device_time_total / iters / 1e3, count + e.count // iters)
    return dict(sorted(totals.items(), key=lambda item: -item[1][0]))


def kernel_events(averages) -> list:
    """The profiled device events (the kernels). With the host recorded too, the torch ops that launch kernels
    also report self device time: counting them would count those kernels twice."""
    return [e for e in averages if e.device_time_total > 0 and e.device_type != DeviceType.CPU]


def make_step(model, forward, x, train: bool):
    """One profiled call under bf16 autocast. Training: forward + backward, then the gradients set to None as
    optimizer.zero_grad() does, so every backward writes fresh gradients: accumulating into the previous call's
    would add a kernel and host work per parameter that a training step does not have."""
    def step():
        if train:
            with torch.autocast(x.device.type, dtype=torch.bfloat16):
                out = forward(x)
            out.float().square().mean().backward()
            model.zero_grad(set_to_none=True)
        else:
            with torch.inference_mode(), torch.autocast(x.device.type, dtype=torch.bfloat16):
                forward(x)
    return step


def profile(name, size, batch, features, train, iters, rows, layer_norm='as built', compiled=False, host_rows=0,
            inductor_report=0):
    """layer_norm: 'as built', 'native' (every LayerNorm on torch's kernels) or 'fused' (every LayerNorm the
    fused one: this toolkit's models have it built in, timm's get theirs swapped). host_rows: also record the host
    side and print that many ops / regions by their own (self) CPU time. inductor_report (with compiled): print
    inductor's layout-optimisation decision per graph and the source of that many of its slowest kernels."""
    model = channels_last(build(name, 'fused-ln' if layer_norm == 'fused' else 'eager', img_size=size).train(train))
    forward = model.forward_features if features else model
    if compiled:
        torch._dynamo.reset()
        forward = torch.compile(forward)  # compiled by profile_calls' warm-up calls
    x = torch.randn(batch, 3, size, size, device='cuda').to(memory_format=torch.channels_last)
    step = make_step(model, forward, x, train)
    started = time.time()
    # (caches off for the report: a graph loaded from inductor's cache is not lowered again, nor its kernels written)
    import torch._inductor.config as inductor_config
    no_cache = inductor_config.patch(force_disable_caches=True) if inductor_report else contextlib.nullcontext()
    with fused_layer_norm(layer_norm != 'native'), layout_decisions(inductor_report > 0) as decisions, no_cache:
        averages = profile_calls(step, iters, cpu=host_rows > 0).key_averages()
        events = kernel_events(averages)
        # wall time per call without the profiler: above the kernels' time, the call is bound by the host
        wall = wall_ms(step, iters)
    events.sort(key=lambda e: -e.self_device_time_total)  # kernels first, not the regions that hold them
    total = sum(e.self_device_time_total for e in events) / iters / 1e3
    label = (name + ('' if layer_norm == 'as built' else f' ({layer_norm} LayerNorm)')
             + (' compiled' if compiled else ''))
    print(f'\n# {label} {"train" if train else "infer"} b{batch}@{size}{" features" if features else ""}: '
          f'{total:.2f} ms of CUDA kernels per call, {wall:.2f} ms wall per call')
    print('by family: ' + ', '.join(f'{family} {ms:.2f} ms ({n}x)'
                                    for family, (ms, n) in category_totals(events, iters).items()))
    for e in events[:rows]:
        print(f'{e.self_device_time_total / iters / 1e3:8.3f} ms {e.count // iters:5d}x  {e.key[:110]}')
    if host_rows:
        host = sorted(averages, key=lambda e: -e.self_cpu_time_total)
        print(f'host: {sum(e.self_cpu_time_total for e in host) / iters / 1e3:.2f} ms of self CPU time per call '
              '(profiled, so slower than without the profiler)')
        for e in host[:host_rows]:
            print(f'{e.self_cpu_time_total / iters / 1e3:8.3f} ms {e.count // iters:5d}x  {e.key[:110]}')
    if inductor_report:
        for graph in decisions:
            print('inductor graph: {nodes} nodes, {convolutions} aten.convolution, layout optimisation '
                  '{layout_opt}'.format(**graph))
        slowest = [e.key for e in events if e.key.startswith('triton_')][:inductor_report]
        for kernel, source in inductor_kernel_sources(slowest, since=started).items():
            print(f'\n## source of {kernel}\n{source}')


@contextlib.contextmanager
def layout_decisions(record: bool = True):
    """Inductor's layout-optimisation decision for each graph it lowers inside the block (a list of dicts). Once on,
    it gives 4D activations feeding convolutions channels-last strides, which made compiled Agent-Swin-T's
    LayerNorm-backward reductions read (B, H, W, C) maps H-innermost (session 19)."""
    from torch._inductor.graph import GraphLowering
    decisions: list = []
    decide = GraphLowering.decide_layout_opt

    def recording(gm, *, is_inference):
        layout_opt = decide(gm, is_inference=is_inference)
        decisions.append(dict(nodes=len(gm.graph.nodes), layout_opt=layout_opt, convolutions=sum(
            n.target is torch.ops.aten.convolution.default for n in gm.graph.nodes)))
        return layout_opt
    if record:
        GraphLowering.decide_layout_opt = staticmethod(recording)
    try:
        yield decisions
    finally:
        GraphLowering.decide_layout_opt = staticmethod(decide)


def inductor_kernel_sources(names, since: float, cache_dir: str | None = None) -> dict:
    """{kernel name: its Triton source} for inductor kernels written to the cache at or after ``since`` (time.time()),
    each found by its `def name(` line; a name with no such file is left out."""
    if cache_dir is None:
        from torch._inductor.runtime.cache_dir_utils import cache_dir as inductor_cache_dir
        cache_dir = inductor_cache_dir()
    wanted, found = set(names), {}
    for path in glob.glob(os.path.join(cache_dir, '**', '*.py'), recursive=True):
        if not wanted - set(found) or os.path.getmtime(path) < since:
            continue
        with open(path) as f:
            text = f.read()
        for name in wanted - set(found):
            if f'def {name}(' in text:
                found[name] = text
    return {name: found[name] for name in names if name in found}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('models', nargs='+')
    parser.add_argument('--size', type=int, default=224)
    parser.add_argument('--batch', type=int, default=64)
    parser.add_argument('--features', action='store_true', help='backbone only (forward_features)')
    parser.add_argument('--train', action='store_true', help='forward + backward instead of inference')
    parser.add_argument('--iters', type=int, default=5)
    parser.add_argument('--rows', type=int, default=15)
    parser.add_argument('--compile', action='store_true', help='profile the torch.compile\'d model')
    parser.add_argument('--host-rows', type=int, default=0,
                        help='also profile the host and print this many ops by their own CPU time')
    parser.add_argument('--inductor-report', type=int, default=0, metavar='K',
                        help='with --compile: inductor\'s layout-optimisation decision per graph and the source of '
                             'the K slowest inductor kernels')
    parser.add_argument('--fused-layer-norm', action='store_true',
                        help='profile each model twice: every LayerNorm on torch\'s kernels, then every one '
                             'linattn_vision.layers.LayerNorm (under autocast in inference: one Triton kernel, '
                             'fp32 statistics, output in the autocast dtype)')
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit('profile_model.py needs a CUDA GPU')
    # headroom for recompiles, as in benchmark_models.py
    torch._dynamo.config.recompile_limit = 64
    for name in args.models:
        for layer_norm in ('native', 'fused') if args.fused_layer_norm else ('as built',):
            profile(name, args.size, args.batch, args.features, args.train, args.iters, args.rows, layer_norm,
                    args.compile, args.host_rows, args.inductor_report if args.compile else 0)


if __name__ == '__main__':
    main()
