"""The Triton kernels of focused linear attention, run on CPU through Triton's interpreter.

TRITON_INTERPRET must be set before the kernel module is defined, so every case runs in one child process that
starts with the variable set; the tests here assert on what it reports. The interpreter mishandles bf16, so the
cases are fp32 and fp16 (bf16 is covered by the GPU tests).
"""
from pathlib import Path

import pytest

from interpreter import run_in_interpreter  # tests/interpreter.py

HERE = Path(__file__).resolve().parent

# (name, B, N, heads, head_dim, dtype, with_pos, focusing_factor, magnitude)
CASES = [
    ('fp32_3heads_d16_pos', 2, 37, 3, 16, 'float32', True, 3.0, 1.0),
    ('fp32_1head_d24_p2.5', 1, 21, 1, 24, 'float32', False, 2.5, 1.0),
    ('fp32_2heads_d32_large', 2, 19, 2, 32, 'float32', True, 3.0, 1e3),
    ('fp16_3heads_d32_pos', 2, 40, 3, 32, 'float16', True, 3.0, 1.0),
    ('fp16_1head_d64_1e3', 1, 18, 1, 64, 'float16', True, 3.0, 1e3),
    # a head dim that is no power of two (padded lanes), Swin-T stage 1's layout in fp32, 32 heads
    ('fp16_3heads_d24_padded', 2, 20, 3, 24, 'float16', True, 3.0, 1.0),
    ('fp32_3heads_d32_pos', 2, 33, 3, 32, 'float32', True, 3.0, 1.0),
    ('fp16_32heads_d16', 1, 17, 32, 16, 'float16', False, 3.0, 1.0),
    # one token block: one split per batch, whose partial is the state
    ('fp32_2heads_d16_one_block', 3, 16, 2, 16, 'float32', True, 3.0, 1.0),
]
TOL = {'float32': 1e-5, 'float16': 3e-3}

CHILD = r'''
import json, sys
sys.path.insert(0, {here!r})
import torch
from linattn_vision.ops.focused_linear import op
from focused_linear_cases import compare_with_float64
assert op._runs_triton(torch.zeros(1)), 'interpreter path not taken'
results = {{}}
for name, B, N, H, d, dtype, with_pos, p, mag in {cases!r}:
    res = compare_with_float64(B, N, H, d, getattr(torch, dtype), 'cpu', with_pos, p, mag, seed=len(results))
    results[name] = res
# the same inputs twice give bitwise the same result (partials are summed in a fixed order)
from focused_linear_cases import make_inputs
q, k, v, scale, pos = make_inputs(2, 37, 3, 16, torch.float32, 'cpu')
o1 = op.focused_linear_attention(q, k, v, scale, pos, 3)
o2 = op.focused_linear_attention(q, k, v, scale, pos, 3)
results['deterministic'] = bool(torch.equal(o1, o2))
# q, k, v as slices of one qkv tensor (row stride 3C, as the models pass them): the kernels read them in place
qkv = torch.cat([q, k, v], -1).reshape(2, 37, 3, 48).requires_grad_()
contig = torch.cat([q, k, v], -1).reshape(2, 37, 3, 48).detach().clone().requires_grad_()
outs = []
for t in (qkv, contig):
    qs, ks, vs = t.unbind(2) if t is qkv else (x.contiguous() for x in t.unbind(2))
    o = op.focused_linear_attention(qs, ks, vs, scale, pos, 3)
    outs.append([o] + list(torch.autograd.grad(o.square().sum(), [t])))
results['strided_inputs_ok'] = bool(qkv.unbind(2)[0].stride(1) == 144) and all(
    torch.equal(a, b) for a, b in zip(*outs))
# scale beyond softplus's linear threshold (20) and far below zero (softplus ~ 1e-13): the kernels' softplus and
# its slope match torch's, values and scale gradient
from focused_linear_cases import rel_err
from linattn_vision.ops.focused_linear import focused_linear_attention_reference
scale_x = torch.linspace(-30.0, 30.0, 48)
leaves = [t.clone().requires_grad_() for t in (q[:, :, :48], k[:, :, :48], v[:, :, :48], scale_x)]
o = op.focused_linear_attention(*leaves, None, 3)
g = torch.autograd.grad(o.square().sum(), leaves)
ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
ro = focused_linear_attention_reference(*ref_leaves, None, 3)
rg = torch.autograd.grad(ro.square().sum(), ref_leaves)
results['extreme_scale_errors'] = [rel_err(o, ro)] + [rel_err(a, b) for a, b in zip(g, rg)]
# the grid of a symbolic token count (torch.compile at changing image sizes): a split count independent of N, so
# at 18 tokens (2 blocks of 16) on the interpreter's 4 'SMs' most splits have no block and write zero partials
from linattn_vision.ops.focused_linear import kernels
kernels._cached_config.cache_clear()
kernels._splits_follow_tokens = lambda n_blocks: False
cfg = kernels._launch_config('fwd_state', 2, 16, 18, 1, torch.device('cpu'))
results['empty_splits'] = [cfg['splits'], cfg['n_blocks']]
results['empty_splits_errors'] = compare_with_float64(1, 18, 2, 16, torch.float32, 'cpu', True, 3.0, 1.0, seed=7)
print('RESULTS' + json.dumps(results))
'''


@pytest.fixture(scope='module')
def interpreter_results():
    return run_in_interpreter(CHILD.format(here=str(HERE), cases=CASES))


@pytest.mark.parametrize('case', CASES, ids=[c[0] for c in CASES])
def test_kernels_match_float64(interpreter_results, case):
    name, dtype = case[0], case[5]
    res = interpreter_results[name]
    assert res['finite'], res
    assert res['dtypes_ok'], res
    for key in ('out', 'q', 'k', 'v', 'scale') + (('pos',) if case[6] else ()):
        assert res[key] < TOL[dtype], (key, res)


def test_kernels_deterministic(interpreter_results):
    assert interpreter_results['deterministic']


def test_kernels_read_row_strided_qkv_slices_in_place(interpreter_results):
    """q, k, v as unbind slices of one (B, N, 3, C) tensor give bitwise the results (and qkv gradient) of
    contiguous copies."""
    assert interpreter_results['strided_inputs_ok']


def test_kernels_softplus_matches_torch_at_extreme_scales(interpreter_results):
    """scale from -30 to 30 (both sides of softplus's threshold of 20): output, q/k/v and scale gradients."""
    errors = interpreter_results['extreme_scale_errors']
    assert len(errors) == 5 and max(errors) < 1e-5, errors


def test_kernels_leave_splits_past_the_last_block_empty(interpreter_results):
    """With N symbolic the split count does not follow N (see kernels._with_grid): splits with no token block write
    zero partials, and output and every gradient still match float64."""
    splits, n_blocks = interpreter_results['empty_splits']
    assert splits > n_blocks == 2
    res = interpreter_results['empty_splits_errors']
    assert res['finite'] and res['dtypes_ok'], res
    for key in ('out', 'q', 'k', 'v', 'scale', 'pos'):
        assert res[key] < TOL['float32'], (key, res)
