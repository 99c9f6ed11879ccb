"""GPU time of the parts of a model, CUDA-graph replay (median), bf16 autocast inference: the measurements behind
BENCHMARKS.md session 7.

    python tools/benchmark_parts.py                 # every part
    python tools/benchmark_parts.py stages sdpa     # some: stages, dwc, split, sdpa, agent, agent_tiles, agent_kernels
    SIZE=2048 BATCH=1 python tools/benchmark_parts.py stages

stages: per stage of FLatten-Swin-T, Agent-Swin-T and timm's Swin-T (backbone at SIZE, batch BATCH), then the parts of
        a FLatten block (stages 1, 2) and of window blocks (stages 3, 4);
dwc:    x + dwc(v) with v a slice of qkv: torch on the strided view, torch on a dense copy, the Triton kernel;
split:  the focused op's forward against the state pass's splits per SM;
sdpa:   window-attention shapes in each SDPA backend, with the merged shift mask, the position bias only, no mask;
agent:  Agent-Swin-T's two attention steps at its stage shapes (batch 64 at 224), trained (forward + backward, biases
        trainable): both steps in the Triton kernels ('fused', the op's route on CUDA), or each step on SDPA or as
        matmul, softmax, matmul ('matmul8' with the broadcast step's agents padded to a multiple of 8), GPU time (graph
        replay) and eager time per call (CUDA events, the host's launches included);
agent_tiles: the agent kernels' launch settings (tokens per tile, warps, programs per SM) swept at those shapes, fused
        forward + backward in graph replay: the fastest settings per stage and the default's time;
agent_kernels: the fused step's GPU time per kernel (torch.profiler) at each stage, at the default launch settings,
        without padded bias rows and with more programs per SM (where the time of the kernels and of the partial sums
        between them goes).
"""
import os
import sys
import warnings

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmark_models import build, capture_graph, channels_last, cuda_time  # noqa: E402

from linattn_vision.ops import depthwise_conv_tokens, focused_linear_attention, softmax_attention  # noqa: E402
from linattn_vision.ops.agent import kernels as agent_kernels  # noqa: E402
from linattn_vision.ops.agent import op as agent_op  # noqa: E402
from linattn_vision.ops.agent.op import _attend  # noqa: E402
from linattn_vision.ops.focused_linear import kernels as focused_kernels  # noqa: E402

SIZE = int(os.environ.get('SIZE', 1024))
BATCH = int(os.environ.get('BATCH', 1))


def gt(fn, reps=40):
    """Microseconds per call of fn replayed from a CUDA graph (median), under inference mode and bf16 autocast."""
    def step():
        with torch.inference_mode(), torch.autocast('cuda', dtype=torch.bfloat16, cache_enabled=False):
            fn()
    replay = capture_graph(step)
    return cuda_time(replay, warmup=5, iters=reps) * 1000


def stage_inputs(model):
    """NHWC inputs of each stage of a swin-like model (ours or timm's)."""
    x = torch.randn(BATCH, 3, SIZE, SIZE, device='cuda').to(memory_format=torch.channels_last)
    outs = []
    with torch.inference_mode(), torch.autocast('cuda', dtype=torch.bfloat16):
        h = model.patch_embed(x)
        for layer in model.layers:
            outs.append(h)
            h = layer(h)  # timm's stages downsample first; this toolkit's stages end with it
            if 'timm' not in type(layer).__module__ and layer.downsample is not None:
                h = layer.downsample(h)
    return x, outs


def per_stage(name):
    model = channels_last(build(name, 'eager', img_size=SIZE).eval())
    x, ins = stage_inputs(model)
    x_in = x.clone()
    ins = [t.clone() for t in ins]
    rows = [('patch_embed', gt(lambda: model.patch_embed(x_in)))]
    timm_model = 'timm' in type(model).__module__
    for i, layer in enumerate(model.layers):
        t = ins[i]
        if timm_model:
            rows.append((f'stage{i} (ds+blocks) {tuple(t.shape)}', gt(lambda layer=layer, t=t: layer(t))))
        else:
            rows.append((f'stage{i} blocks {tuple(t.shape)}', gt(lambda layer=layer, t=t: layer(t))))
            if layer.downsample is not None:
                with torch.inference_mode(), torch.autocast('cuda', dtype=torch.bfloat16):
                    y = layer(t)
                rows.append((f'stage{i} merge', gt(lambda layer=layer, y=y: layer.downsample(y))))
    rows.append(('whole forward_features', gt(lambda: model.forward_features(x_in))))
    print(f'\n## {name} b{BATCH}@{SIZE}')
    for k, v in rows:
        print(f'{v:9.1f} us  {k}')
    return model, ins


def flatten_block_parts(model, ins, stage):
    blk = model.layers[stage].blocks[0]
    x = ins[stage]
    B, H, W, C = x.shape
    attn = blk.attn
    with torch.inference_mode(), torch.autocast('cuda', dtype=torch.bfloat16):
        y = blk.norm1(x).reshape(B, H * W, C)
        qkv = attn.qkv(y)
        q, k, v = qkv.reshape(B, H * W, 3, C).unbind(2)
        a = focused_linear_attention(q, k, v, attn.scale, attn.pos_embed((H, W))[0], num_heads=attn.num_heads)
        hid = blk.mlp.fc1(blk.norm2(x))
    pos = attn.pos_embed((H, W))[0]
    vc = v.contiguous()
    vgrid_cl = v.transpose(1, 2).reshape(B, C, H, W).contiguous(memory_format=torch.channels_last)
    vgrid_nchw = v.transpose(1, 2).reshape(B, C, H, W).contiguous()
    w = attn.dwc.weight.repeat(attn.num_heads, 1, 1, 1).to(torch.bfloat16)
    wcl = w.contiguous(memory_format=torch.channels_last)
    b = attn.dwc.bias.repeat(attn.num_heads).to(torch.bfloat16)
    rows = [
        ('block', gt(lambda: blk(x))),
        ('norm1', gt(lambda: blk.norm1(x))),
        ('qkv linear', gt(lambda: attn.qkv(y))),
        ('attn (qkv..proj)', gt(lambda: attn(y, (H, W)))),
        ('focused op', gt(lambda: focused_linear_attention(q, k, v, attn.scale, pos, num_heads=attn.num_heads))),
        ('value_conv (strided v)', gt(lambda: attn.value_conv(v, (H, W)))),
        ('value_conv (contig v)', gt(lambda: attn.value_conv(vc, (H, W)))),
        ('conv2d dense CL bf16 only', gt(lambda: F.conv2d(vgrid_cl, wcl, b, padding=2, groups=C))),
        ('conv2d dense NCHW bf16 only', gt(lambda: F.conv2d(vgrid_nchw, w, b, padding=2, groups=C))),
        ('add a+dwc', gt(lambda: a + a)),
        ('proj', gt(lambda: attn.proj(a))),
        ('norm2', gt(lambda: blk.norm2(x))),
        ('mlp', gt(lambda: blk.mlp(x))),
        ('fc1', gt(lambda: blk.mlp.fc1(x))),
        ('gelu', gt(lambda: blk.mlp.act(hid))),
        ('fc2', gt(lambda: blk.mlp.fc2(hid))),
        ('residual add', gt(lambda: x + x)),
    ]
    print(f'\n## flatten block stage {stage} {tuple(x.shape)}')
    for k, val in rows:
        print(f'{val:9.1f} us  {k}')


def window_block_parts(model, ins, stage, j=1):
    blk = model.layers[stage].blocks[j]
    x = ins[stage]
    B, H, W, C = x.shape
    with torch.inference_mode(), torch.autocast('cuda', dtype=torch.bfloat16):
        y = blk.norm1(x)
    window, shift = blk.window_and_shift(H, W)
    pad_h, pad_w = (-H) % window[0], (-W) % window[1]
    Hp, Wp = H + pad_h, W + pad_w
    from linattn_vision.models.swin import window_partition, window_reverse
    yp = F.pad(y, (0, 0, 0, pad_w, 0, pad_h))
    with torch.inference_mode(), torch.autocast('cuda', dtype=torch.bfloat16):
        win = window_partition(torch.roll(yp, shifts=(-shift[0], -shift[1]), dims=(1, 2)), window)
        mask = blk.shift_mask(Hp, Wp, window, shift, x.device) if any(shift) else None
        out = blk.attn(win, window, mask)

    def prep():
        z = F.pad(y, (0, 0, 0, pad_w, 0, pad_h))
        z = torch.roll(z, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        return window_partition(z, window)

    def post():
        z = window_reverse(out, window, Hp, Wp)
        z = torch.roll(z, shifts=shift, dims=(1, 2))
        return z[:, :H, :W]
    rows = [
        ('block', gt(lambda: blk(x))),
        ('_window_attn', gt(lambda: blk._window_attn(y))),
        ('pad+roll+partition', gt(prep)),
        ('attn (qkv..proj)', gt(lambda: blk.attn(win, window, mask))),
        ('qkv linear', gt(lambda: blk.attn.qkv(win))),
        ('bias(+mask)', gt(lambda: blk.attn.relative_position_bias(window) if mask is None else
                           (mask.unsqueeze(1) + blk.attn.relative_position_bias(window)).to(torch.bfloat16))),
        ('reverse+roll+crop', gt(post)),
        ('mlp', gt(lambda: blk.mlp(x))),
        ('norm1', gt(lambda: blk.norm1(x))),
    ]
    print(f'\n## window block stage {stage} blk {j} {tuple(x.shape)} window {window} shift {shift} pad {pad_h},{pad_w}')
    for k, val in rows:
        print(f'{val:9.1f} us  {k}')


def sdpa_probe():
    print('\n## SDPA window attention (us, graph replay)')
    dt = torch.bfloat16
    for label, B, nW, h, N in [('s3 b1@1024', 1, 100, 12, 49), ('s4 b1@1024', 1, 25, 24, 49),
                               ('s3 b64@224', 64, 4, 12, 49), ('s2 b64@224', 64, 16, 6, 49),
                               ('s1 b64@224', 64, 64, 3, 49)]:
        d = 32
        q, k, v = (torch.randn(B, nW * h, N, d, device='cuda', dtype=dt) for _ in range(3))
        mask = torch.randn(1, nW * h, N, N, device='cuda', dtype=dt)
        q2, k2, v2 = (t.reshape(B * nW, h, N, d) for t in (q, k, v))
        mask2 = torch.randn(nW, h, N, N, device='cuda', dtype=dt)
        bias = torch.randn(1, h, N, N, device='cuda', dtype=dt)
        res = {}
        for name, be in [('default', None), ('eff', SDPBackend.EFFICIENT_ATTENTION), ('math', SDPBackend.MATH),
                         ('cudnn', SDPBackend.CUDNN_ATTENTION), ('flash', SDPBackend.FLASH_ATTENTION)]:
            for mname, args in [('merged-mask', (q, k, v, mask)), ('win-mask', (q2, k2, v2, mask2 if B == 1 else
                                 mask2.expand(B, -1, -1, -1, -1).reshape(B * nW, h, N, N))),
                                ('bias-only', (q2, k2, v2, bias)), ('nomask', (q2, k2, v2, None))]:
                def f(args=args, be=be):
                    if be is None:
                        return F.scaled_dot_product_attention(*args[:3], attn_mask=args[3])
                    with sdpa_kernel([be]):
                        return F.scaled_dot_product_attention(*args[:3], attn_mask=args[3])
                try:
                    with warnings.catch_warnings(record=True) as w:
                        warnings.simplefilter('always')
                        res[(name, mname)] = f'{gt(f):7.1f}'
                except Exception as e:  # noqa
                    res[(name, mname)] = 'n/a'
                    msg = str(e).split('\n')[0][:100]
                    print(f'   {label} {name} {mname}: {msg}; {[str(x.message)[:160] for x in w][:2]}')
        # explicit bf16 matmul softmax (timm style)
        def explicit(q=q2, k=k2, v=v2, m=mask2 if B == 1 else None):
            a = (q * d ** -0.5) @ k.transpose(-1, -2)
            if m is not None:
                a = a + m
            return a.softmax(-1) @ v
        res[('explicit', 'win-mask' if B == 1 else 'nomask')] = f'{gt(explicit):7.1f}'
        print(f'{label}: ' + ', '.join(f'{a}/{b}={v}' for (a, b), v in res.items()))


def dwc_probe():
    print('\n## DWC (us, graph replay), x + dwc(v) with v a slice of qkv')
    for label, B, H, W, C, heads in [('s1 b1@1024', 1, 256, 256, 96, 3), ('s2 b1@1024', 1, 128, 128, 192, 6),
                                     ('s1 b64@224', 64, 56, 56, 96, 3), ('pvt s1 b64@224', 64, 56, 56, 64, 1)]:
        qkv = torch.randn(B, H * W, 3 * C, device='cuda', dtype=torch.bfloat16)
        v = qkv[..., 2 * C:]
        res = torch.randn(B, H * W, C, device='cuda', dtype=torch.bfloat16)
        conv = torch.nn.Conv2d(C // heads, C // heads, 5, padding=2, groups=C // heads).cuda()
        w, b = conv.weight, conv.bias

        def strided():  # session-6 code: native depthwise on the strided view
            grid = v.transpose(1, 2).reshape(B, C, H, W)
            return res + F.conv2d(grid, w.repeat(heads, 1, 1, 1), b.repeat(heads), padding=2,
                                  groups=C).flatten(2).transpose(1, 2)

        def dense():
            grid = v.contiguous().transpose(1, 2).reshape(B, C, H, W)
            return res + F.conv2d(grid, w.repeat(heads, 1, 1, 1), b.repeat(heads), padding=2,
                                  groups=C).flatten(2).transpose(1, 2)
        tri = lambda: depthwise_conv_tokens(v, w, b, (H, W), res)  # noqa
        with torch.inference_mode(), torch.autocast('cuda', dtype=torch.bfloat16):
            ref = dense().float()
            err = (tri().float() - ref).abs().max().item()
        print(f'{label}: strided {gt(strided):7.1f}  dense {gt(dense):7.1f}  triton {gt(tri):7.1f}  '
              f'(max err {err:.3g})')
        # training: fwd+bwd of the torch paths (eager, CUDA events)
        vv = qkv.clone().requires_grad_()
        for name, fn in [('strided', strided), ('dense', dense)]:
            def fb(fn=fn):
                nonlocal v
                v = vv[..., 2 * C:]
                with torch.autocast('cuda', dtype=torch.bfloat16):
                    out = fn()
                out.float().sum().backward()
            t = cuda_time(fb, warmup=3, iters=20) * 1000
            print(f'   train fwd+bwd {name}: {t:7.1f} us (eager)')
        v = qkv[..., 2 * C:]


def split_probe():
    print('\n## focused op fwd at batch 1 vs splits_per_sm (us, graph replay); fwd+bwd eager events')
    for label, B, N, C, h in [('s1 b1@1024', 1, 65536, 96, 3), ('s2 b1@1024', 1, 16384, 192, 6),
                              ('s1 b1@2048', 1, 262144, 96, 3), ('s1 b128', 128, 3136, 96, 3),
                              ('s1 b2 det', 2, 67200, 96, 3)]:
        q, k, v = (torch.randn(B, N, C, device='cuda', dtype=torch.bfloat16) for _ in range(3))
        scale = torch.zeros(1, 1, C, device='cuda')
        pos = torch.zeros(N, C, device='cuda')
        row = []
        for sps in [None, 4, 2, 1, 0.5, 0.25]:
            focused_kernels.CONFIG_OVERRIDE.clear()
            if sps is not None:
                focused_kernels.CONFIG_OVERRIDE['fwd_state'] = {'splits_per_sm': sps}
                focused_kernels.CONFIG_OVERRIDE['bwd_q'] = {'splits_per_sm': sps}
            t = gt(lambda: focused_linear_attention(q, k, v, scale, pos, num_heads=h))
            qq, kk, vv = (x.clone().requires_grad_() for x in (q, k, v))

            def fb():
                focused_linear_attention(qq, kk, vv, scale, pos, num_heads=h).sum().backward()
            tb = cuda_time(fb, warmup=3, iters=20) * 1000
            row.append(f'sps={sps}: {t:6.1f}/{tb:6.1f}')
        focused_kernels.CONFIG_OVERRIDE.clear()
        print(f'{label}: ' + ', '.join(row))


AGENT_STAGES = [('stage 1', 3136, 3, 9), ('stage 2', 784, 6, 16), ('stage 3', 196, 12, 49)]  # Agent-Swin-T's


def agent_stage_inputs(N, h, n, B=64, d=32, dt=torch.bfloat16):
    """Trainable q, k, v, agents and both biases at one of Agent-Swin-T's stage shapes, and an output gradient."""
    q, k, v = (torch.randn(B, h, N, d, device='cuda', dtype=dt, requires_grad=True) for _ in range(3))
    agent = torch.randn(B, h, n, d, device='cuda', dtype=dt, requires_grad=True)
    agent_bias = torch.randn(1, h, n, N, device='cuda', dtype=dt, requires_grad=True)
    query_bias = torch.randn(1, h, N, n, device='cuda', dtype=dt, requires_grad=True)
    return (q, k, v, agent, agent_bias, query_bias), torch.randn(B, h, N, d, device='cuda', dtype=dt)


def fused_agent_step(leaves, grad_out):
    """Forward + backward of ops.agent_attention (the Triton kernels on CUDA)."""
    def step():
        torch.autograd.grad(agent_op.agent_attention(*leaves), leaves, grad_out)
    return step


def agent_probe():
    """The agent steps' routes in training (see the module note): which one each step should take in eager."""
    print('\n## Agent-Swin-T attention steps, forward + backward, bf16, batch 64 at 224 (us: graph replay / eager)')
    dt, B, d = torch.bfloat16, 64, 32

    def sdpa(q, k, v, bias, scale):
        return softmax_attention(q, k, v, bias, scale=scale)

    def matmul_keys_padded(q, k, v, bias, scale):
        """_attend with the keys padded to a multiple of 8 (zero keys and values, -inf bias): the broadcast step's
        9 and 49 agents make rows cuBLAS/CUTLASS can only load unaligned (`..._align1` kernels in the profiles)."""
        pad = -k.shape[-2] % 8
        if pad:
            k, v = F.pad(k, (0, 0, 0, pad)), F.pad(v, (0, 0, 0, pad))
            bias = F.pad(bias, (0, pad), value=float('-inf'))
        return _attend(q, k, v, bias, scale)

    routes = {'sdpa': sdpa, 'matmul': _attend, 'matmul8': matmul_keys_padded}
    for label, N, h, n in AGENT_STAGES:
        leaves, grad_out = agent_stage_inputs(N, h, n, B, d, dt)
        q, k, v, agent, agent_bias, query_bias = leaves
        fused = fused_agent_step(leaves, grad_out)
        row = []
        try:
            row.append(f'fused {cuda_time(capture_graph(fused), warmup=5, iters=40) * 1000:8.1f} / '
                       f'{cuda_time(fused, warmup=5, iters=40) * 1000:8.1f}')
        except Exception as e:  # noqa: BLE001
            row.append(f'fused error: {str(e).splitlines()[0][:80]}')
        for aggregate, broadcast in [('sdpa', 'sdpa'), ('matmul', 'matmul'), ('matmul', 'sdpa'), ('sdpa', 'matmul'),
                                     ('sdpa', 'matmul8'), ('matmul', 'matmul8')]:
            def step(aggregate=routes[aggregate], broadcast=routes[broadcast]):
                agent_v = aggregate(agent, k, v, agent_bias, d ** -0.5)
                out = broadcast(q, agent, agent_v, query_bias, d ** -0.5)
                torch.autograd.grad(out, leaves, grad_out)
            try:
                graph_us = cuda_time(capture_graph(step), warmup=5, iters=40) * 1000
                eager_us = cuda_time(step, warmup=5, iters=40) * 1000
                row.append(f'{aggregate}+{broadcast} {graph_us:8.1f} / {eager_us:8.1f}')
            except Exception as e:  # noqa: BLE001 (a route a backend rejects is a table cell, not the end of the run)
                row.append(f'{aggregate}+{broadcast} error: {str(e).splitlines()[0][:80]}')
        print(f'{label} (N={N}, {h} heads, {n} agents): ' + ', '.join(row))


def agent_tiles_probe():
    """The agent kernels' launch settings (kernels.CONFIG_OVERRIDE), swept at Agent-Swin-T's training shapes."""
    print('\n## Agent kernels: launch settings, fused forward + backward, bf16, batch 64 at 224 (us, graph replay)')
    for label, N, h, n in AGENT_STAGES:
        fused = fused_agent_step(*agent_stage_inputs(N, h, n))
        times = {}
        for setting in [{}] + [dict(block_t=t, num_warps=w, programs_per_sm=p)
                               for t in (16, 32, 64, 128) for w in (2, 4, 8) for p in (1, 2, 4)
                               if t * agent_kernels._pad(n) <= 8192]:
            try:
                with agent_kernels.override(**setting):
                    times[str(setting or 'default')] = cuda_time(capture_graph(fused), warmup=5, iters=40) * 1000
            except Exception as e:  # noqa: BLE001 (a setting that does not compile is a line, not the end)
                print(f'{label} {setting}: error {str(e).splitlines()[0][:80]}')
        best = sorted(times.items(), key=lambda kv: kv[1])[:5]
        print(f'{label} (N={N}, {h} heads, {n} agents): default {times.get("default", float("nan")):.1f}; best: '
              + ', '.join(f'{name} {us:.1f}' for name, us in best))


def agent_kernels_probe():
    """Per-kernel GPU time of the fused agent step (forward + backward) at Agent-Swin-T's training shapes."""
    from torch.profiler import ProfilerActivity, profile
    print('\n## Agent kernels: GPU time per kernel of the fused forward + backward, bf16, batch 64 at 224 '
          '(us per step)')
    reps = 20
    for label, N, h, n in AGENT_STAGES:
        fused = fused_agent_step(*agent_stage_inputs(N, h, n))
        for setting in ({}, dict(bias_row_alignment=1), dict(programs_per_sm=8)):
            with agent_kernels.override(**setting):
                for _ in range(3):
                    fused()
                torch.cuda.synchronize()
                with profile(activities=[ProfilerActivity.CUDA]) as prof:
                    for _ in range(reps):
                        fused()
                    torch.cuda.synchronize()
            rows = sorted(((e.key, e.device_time_total / reps, e.count // reps) for e in prof.key_averages()
                           if e.device_time_total > 0), key=lambda r: -r[1])
            total = sum(us for _, us, _ in rows)
            print(f'{label} (N={N}, {h} heads, {n} agents) {setting or "default"}: {total:.1f} us of kernels; '
                  + '; '.join(f'{name[:48]} {us:.1f} ({calls}x)' for name, us, calls in rows))


def stages_probe():
    torch.backends.cudnn.benchmark = False
    model, ins = per_stage('flatten_swin_t')
    per_stage('swin_tiny_patch4_window7_224')
    per_stage('agent_swin_t')
    flatten_block_parts(model, ins, 0)
    flatten_block_parts(model, ins, 1)
    window_block_parts(model, ins, 2, 1)
    window_block_parts(model, ins, 2, 0)
    window_block_parts(model, ins, 3, 1)


if __name__ == '__main__':
    if not torch.cuda.is_available():
        sys.exit('benchmark_parts.py needs a CUDA GPU')
    parts = ('stages', 'dwc', 'split', 'sdpa', 'agent', 'agent_tiles', 'agent_kernels')
    for part in sys.argv[1:] or parts[:5]:
        if part not in parts:
            sys.exit(f'unknown part {part!r} ({", ".join(parts)})')
        globals()[part + '_probe']()
