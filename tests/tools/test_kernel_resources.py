"""tools/kernel_resources.py: the op's kernels compiled for sm_90 without a GPU, with their resource counts."""
import pytest
from tool_helpers import load_tool  # tests/tool_helpers.py


def test_reports_every_pass_within_hardware_limits_and_applies_the_register_cap():
    pytest.importorskip('triton')
    results = load_tool('kernel_resources').kernel_resources('swin_s1', 'bf16')
    assert list(results) == ['fwd_state', 'fwd_out', 'bwd_q', 'bwd_kv']
    for name, r in results.items():
        assert 0 < r['regs'] <= 255 and 0 < r['shared'] <= 227 * 1024 and r['barriers'] > 0, (name, r)
    # the tuned 168-register cap of Swin-T stage 1's key/value backward reaches ptxas
    assert results['bwd_kv']['regs'] <= 168 and 'maxnreg=168' in results['bwd_kv']['config']


def test_reports_the_five_agent_kernels():
    pytest.importorskip('triton')
    results = load_tool('kernel_resources').agent_kernel_resources(49)
    assert list(results) == ['aggregate_fwd_kernel', 'aggregate_combine_kernel', 'broadcast_fwd_kernel',
                             'broadcast_bwd_kernel', 'aggregate_bwd_kernel']
    for name, r in results.items():
        assert 0 < r['regs'] <= 255 and 0 <= r['shared'] <= 227 * 1024 and r['barriers'] > 0, (name, r)
        assert 'N_PAD=64 D_PAD=32' in r['config'], (name, r)
