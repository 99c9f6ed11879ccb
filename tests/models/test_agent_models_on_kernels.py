"""Whole Agent models train on the agent attention kernels as on SDPA: one training step of a small member of each
Agent family, on CPU through Triton's interpreter (fp32), gives the same output and parameter gradients with the
kernels on and off, and the kernels do take every agent block (the layers' biases, prefix tokens, reduced keys and
windows reach them in the layout they accept); under fp16 autocast (the interpreter mishandles bf16) the kernels'
gradients are as close to float64's as SDPA's (per parameter, relative
norm of the error within 1.5x SDPA's + 1e-3). On the GPU the kernels run in every Agent model's training."""
from pathlib import Path

from interpreter import run_in_interpreter  # tests/interpreter.py

CHILD = r'''
import json, sys
sys.path.insert(0, {here!r})
import timm, torch
import linattn_vision  # noqa: F401
from linattn_vision.layers.agent import AgentCore
from linattn_vision.ops.agent import kernels, op
from test_compiled_training import FAMILIES

launches = []
forward = kernels.forward
kernels.forward = lambda *args, **kwargs: launches.append(1) or forward(*args, **kwargs)
BIASES = ('an_bias', 'na_bias', 'ah_bias', 'aw_bias', 'ha_bias', 'wa_bias', 'ac_bias', 'ca_bias')
results = {{}}
for name in ['agent_swin_t', 'agent_pvt_t', 'agent_deit_t', 'agent_cswin_t']:
    torch.manual_seed(0)
    model = timm.create_model(name, img_size=64, drop_path_rate=0., **FAMILIES[name]).train()
    blocks = sum(1 for m in model.modules() if isinstance(m, AgentCore))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith(BIASES):
                p.normal_(0, 0.5)  # biases that matter (they start at zero / small)
    x = torch.randn(2, 3, 64, 64)
    runs = []
    for fused in (True, False):
        model.zero_grad()
        before = len(launches)
        with op.FUSED.set(fused):
            out = model(x)
            out.square().mean().backward()
        grads = {{n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}}
        runs.append((out.detach(), grads, len(launches) - before))
    (out_k, grads_k, taken), (out_s, grads_s, _) = runs
    bias_grads = [n for n in grads_k if n.endswith(BIASES)]
    results[name] = dict(
        kernel_calls=taken, agent_blocks=blocks, same_params=sorted(grads_k) == sorted(grads_s),
        # (DeiT's last block: only the class token reaches the loss, so its grid-query biases get none)
        bias_grads=sum(bool(grads_k[n].abs().sum() > 0) for n in bias_grads) >= len(bias_grads) // 2,
        out_err=((out_k - out_s).abs().max() / out_s.abs().max()).item(),
        grad_err=max(((grads_k[n] - grads_s[n]).abs().max() / grads_s[n].abs().max().clamp_min(1e-12)).item()
                     for n in grads_s))
print('RESULTS' + json.dumps(results))
'''


def test_agent_models_train_on_the_kernels_as_on_sdpa():
    results = run_in_interpreter(CHILD.format(here=str(Path(__file__).parent)), timeout=900)
    for name, r in results.items():
        assert r['agent_blocks'] > 0 and r['kernel_calls'] == r['agent_blocks'], (name, r)
        assert r['same_params'] and r['bias_grads'], (name, r)
        assert r['out_err'] < 1e-5 and r['grad_err'] < 1e-4, (name, r)


CHILD_AMP = r'''
import copy, json, sys
sys.path.insert(0, {here!r})
import timm, torch
import linattn_vision  # noqa: F401
from linattn_vision.ops.agent import kernels, op
from test_compiled_training import FAMILIES

dtypes = []
forward = kernels.forward
kernels.forward = lambda *args, **kwargs: dtypes.append(str(args[0].dtype)) or forward(*args, **kwargs)
results = {{}}
for name in ['agent_swin_t', 'agent_pvt_t']:
    torch.manual_seed(0)
    model = timm.create_model(name, img_size=64, drop_path_rate=0., **FAMILIES[name]).train()
    x = torch.randn(2, 3, 64, 64)
    reference = copy.deepcopy(model).double()
    reference(x.double()).square().mean().backward()
    exact = {{n: p.grad for n, p in reference.named_parameters() if p.grad is not None}}
    errors = []
    for fused in (True, False):
        model.zero_grad()
        with op.FUSED.set(fused), torch.autocast('cpu', dtype=torch.float16):
            out = model(x)
        out.float().square().mean().backward()
        grads = {{n: p.grad for n, p in model.named_parameters() if p.grad is not None}}
        finite = bool(out.isfinite().all()) and all(bool(g.isfinite().all()) for g in grads.values())
        errors.append(({{n: ((grads[n].double() - g).norm() / g.norm().clamp_min(1e-30)).item()
                        for n, g in exact.items()}}, finite))
    (kernel_errors, kernel_finite), (sdpa_errors, sdpa_finite) = errors
    results[name] = dict(finite=kernel_finite and sdpa_finite,
                         worse=[n for n in exact if kernel_errors[n] > 1.5 * sdpa_errors[n] + 1e-3])
results['kernel_dtypes'] = sorted(set(dtypes))
print('RESULTS' + json.dumps(results))
'''


def test_agent_models_under_fp16_autocast_on_the_kernels_match_float64_as_sdpa_does():
    results = run_in_interpreter(CHILD_AMP.format(here=str(Path(__file__).parent)), timeout=900)
    assert results.pop('kernel_dtypes') == ['torch.float16']
    for name, r in results.items():
        assert r['finite'] and not r['worse'], (name, r)
