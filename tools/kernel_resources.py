"""Compile the focused-linear-attention kernels for an H100 (sm_90) without a GPU and print what bounds their
occupancy: registers and spill stack per thread (Triton's bundled ptxas, read back with its cuobjdump), shared
memory per program, and the layout conversions and barriers in the code.

ncu on the GPU machine showed the state and backward passes limited by registers, shared memory and shared-memory
traffic (cross-warp reductions, layout conversions), so these counts are a quick offline proxy when changing the
kernels; timings still need the GPU (tools/benchmark_attention.py). Shared memory matches ncu's exactly; register
counts depend on the ptxas version (the GPU machine's Triton may bundle another one).

    python tools/kernel_resources.py                       # Swin-T stage 1, bf16, the tuned launch configurations
    python tools/kernel_resources.py --shape pvt_s1 --dtype fp16
    python tools/kernel_resources.py --agents 9 16 49      # the agent-attention kernels at Agent-Swin-T's stages
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

import torch

sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # after PYTHONPATH (A/B runs)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tools/, also when imported by a test
from benchmark_attention import SHAPES  # noqa: E402  (the op benchmark's shapes: name -> (B, N, C, heads))

DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16, 'fp32': torch.float32}
# pointers to fp32 buffers; every other pointer has the inputs' dtype
FP32_POINTERS = {'pos_ptr', 'scale_ptr', 'part_ptr', 'state_ptr', 'qgrad_ptr'}
# the agent kernels' fp32 buffers (partials, V_A and its gradient, softmax statistics, bias gradients)
AGENT_FP32_POINTERS = {'part_ptr', 'va_ptr', 'dva_ptr', 'stats_ptr', 'dbias_ptr'}


def _signature(kernel, dtype_name, constexprs, fp32_pointers=FP32_POINTERS):
    """Triton signature of a kernel: pointer, i32 and (`scale`) fp32 arguments by name, constants."""
    sig = {}
    for name in kernel.arg_names:
        if name in constexprs:
            sig[name] = 'constexpr'
        elif name.endswith('_ptr'):
            sig[name] = '*fp32' if name in fp32_pointers else f'*{dtype_name}'
        else:
            sig[name] = 'fp32' if name == 'scale' else 'i32'
    return sig


def _counts(compiled) -> dict:
    """Registers, spill stack, shared memory, layout conversions and barriers of a kernel compiled for sm_90."""
    import triton
    cuobjdump = os.path.join(os.path.dirname(triton.__file__), 'backends', 'nvidia', 'bin', 'cuobjdump')
    usage = _resource_usage(compiled.asm['cubin'], cuobjdump)
    return dict(regs=usage['REG'], stack=usage['STACK'], shared=compiled.metadata.shared,
                converts=compiled.asm['ttgir'].count('ttg.convert_layout'),
                barriers=compiled.asm['ptx'].count('bar.sync'))


def _resource_usage(cubin: bytes, cuobjdump: str) -> dict:
    with tempfile.NamedTemporaryFile(suffix='.cubin') as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([cuobjdump, '--dump-resource-usage', f.name], capture_output=True, text=True,
                              check=True).stdout
    return {key: int(re.search(rf'{key}:(\d+)', text).group(1)) for key in ('REG', 'STACK')}


def compile_pass(name: str, shape: str = 'swin_s1', dtype_name: str = 'bf16', scalars_constant: bool = False):
    """One pass's kernel compiled for sm_90 with its launch configuration at ``shape``, specialized as a launch on
    contiguous (B, N, C) tensors is; returns (compiled kernel, launch configuration). scalars_constant: every scalar
    argument (N, C, strides, loop bounds) a compile-time constant as well, as torch 2.11's mutation analysis of a user
    kernel under torch.compile builds it."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from linattn_vision.ops.focused_linear import kernels

    B, N, C, heads = SHAPES[shape]
    dtype = DTYPES[dtype_name]
    head_dim = C // heads
    kernel = {'fwd_state': kernels._fwd_state_kernel, 'fwd_out': kernels._fwd_out_kernel,
              'bwd_q': kernels._bwd_q_kernel, 'bwd_kv': kernels._bwd_kv_kernel}[name]
    cfg = kernels._launch_config(name, heads, head_dim, N, B, torch.device('cpu'), dtype == torch.float32)
    constexprs = dict(kernels._meta(torch.empty(0, dtype=dtype), 3.0), HAS_POS=True, BLOCK_N=cfg['BLOCK_N'],
                      H_PAD=cfg['H_PAD'], D_PAD=cfg['D_PAD'], STATE=cfg['STATE'])
    constexprs = {k: v for k, v in constexprs.items() if k in kernel.arg_names}
    # what a launch on contiguous (B, N, C) tensors specializes on: 16-byte aligned pointers, strides and
    # channel counts that are multiples of 16
    values = dict(C=C, HEAD_DIM=head_dim, q_sn=C, k_sn=C, v_sn=C, q_sb=N * C, k_sb=N * C, v_sb=N * C)
    signature = _signature(kernel, dtype_name, constexprs)
    if scalars_constant:
        scalars = dict(values, N=N, H=heads, blocks_per_split=cfg['blocks_per_split'], n_blocks=cfg['n_blocks'])
        constexprs.update((arg, scalars[arg]) for arg in kernel.arg_names if signature[arg] == 'i32')
    divisible = [i for i, arg in enumerate(kernel.arg_names) if arg not in constexprs
                 and (arg.endswith('_ptr') or (arg in values and values[arg] % 16 == 0))]
    options = dict(num_warps=cfg['num_warps'], num_stages=cfg['num_stages'])
    if cfg.get('maxnreg'):
        options['maxnreg'] = cfg['maxnreg']
    src = ASTSource(kernel, signature, constexprs=constexprs,
                    attrs={(i,): [['tt.divisibility', 16]] for i in divisible})
    return triton.compile(src, target=GPUTarget('cuda', 90, 32), options=options), cfg


def kernel_resources(shape: str = 'swin_s1', dtype_name: str = 'bf16'):
    """{pass name: {regs, stack, shared, converts, barriers}} for the passes' launch configurations at ``shape``."""
    results = {}
    for name in ('fwd_state', 'fwd_out', 'bwd_q', 'bwd_kv'):
        compiled, cfg = compile_pass(name, shape, dtype_name)
        results[name] = dict(_counts(compiled),
                             config=f"BLOCK_N={cfg['BLOCK_N']} warps={cfg['num_warps']} stages={cfg['num_stages']}"
                                    + (f" maxnreg={cfg['maxnreg']}" if cfg.get('maxnreg') else ''))
    return results


def agent_kernel_resources(n_agents: int, head_dim: int = 32, dtype_name: str = 'bf16'):
    """The same counts for the five agent-attention kernels (ops/agent/kernels.py) at their default launch settings
    for n_agents agents and head_dim, with both biases trained (Triton's default stages; pointers 16-byte aligned,
    bias rows padded to 16 elements)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from linattn_vision.ops.agent import kernels

    dtype = DTYPES[dtype_name]
    common = kernels._constants(head_dim, dtype, n_agents)
    options = dict(num_warps=common.pop('num_warps'))
    results = {}
    for kernel in (kernels._aggregate_fwd_kernel, kernels._aggregate_combine_kernel, kernels._broadcast_fwd_kernel,
                   kernels._broadcast_bwd_kernel, kernels._aggregate_bwd_kernel):
        constexprs = {k: v for k, v in dict(common, HAS_BIAS=True, BIAS_GRAD=True).items() if k in kernel.arg_names}
        signature = _signature(kernel, dtype_name, constexprs, AGENT_FP32_POINTERS)
        src = ASTSource(kernel, signature, constexprs=constexprs,
                        attrs={(i,): [['tt.divisibility', 16]] for i, arg in enumerate(kernel.arg_names)
                               if arg.endswith('_ptr') or arg == 'sbias'})  # (the op pads bias rows to 16)
        compiled = triton.compile(src, target=GPUTarget('cuda', 90, 32), options=options)
        results[kernel.__name__.strip('_')] = dict(
            _counts(compiled),
            config=f"BLOCK_T={common['BLOCK_T']} N_PAD={common['N_PAD']} D_PAD={common['D_PAD']} "
                   f"warps={options['num_warps']}")
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--shape', default='swin_s1', choices=list(SHAPES))
    parser.add_argument('--dtype', default='bf16', choices=list(DTYPES))
    parser.add_argument('--agents', type=int, nargs='+', metavar='N',
                        help='the agent kernels for these agent counts (head dim 32) instead of the focused op')
    args = parser.parse_args(argv)
    runs = ([(f'{n} agents', agent_kernel_resources(n, dtype_name=args.dtype)) for n in args.agents] if args.agents
            else [(args.shape, kernel_resources(args.shape, args.dtype))])
    for label, results in runs:
        print(f'# sm_90, {label}, {args.dtype}: per thread registers / spill stack bytes, shared bytes per program')
        for name, r in results.items():
            print(f"{name:24} regs {r['regs']:4d}  stack {r['stack']:4d}  shared {r['shared']:7d}  "
                  f"layout conversions {r['converts']:3d}  bar.sync {r['barriers']:3d}  ({r['config']})", flush=True)


if __name__ == '__main__':
    main()
