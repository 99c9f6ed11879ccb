"""Checks shared by the model-family tests (tests/models)."""
from decimal import ROUND_HALF_UP, Decimal

import timm
import torch


def published_roundings(count):
    """count in millions to 0.1M, rounded directly or via two decimals (half up), as papers do."""
    millions = Decimal(count) / 10 ** 6
    direct = millions.quantize(Decimal('0.1'), ROUND_HALF_UP)
    via_two = millions.quantize(Decimal('0.01'), ROUND_HALF_UP).quantize(Decimal('0.1'), ROUND_HALF_UP)
    return {float(direct), float(via_two)}


def inference_gflops(model, x):
    """Multiply-accumulates x 2 / 1e9 of ``model(x)`` under torch's FlopCounterMode, counting CPU SDPA too: torch
    has no formula for its fused CPU kernel (``_scaled_dot_product_flash_attention_for_cpu``), so without one the
    count would depend on whether SDPA's inputs let it take that kernel or its matmul fallback."""
    from torch.utils import flop_counter

    def cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs):
        return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_sdpa_flops}
    with torch.no_grad(), flop_counter.FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        model(x)
    return counter.get_total_flops() / 1e9


def create_from_official(name, path, **kwargs):
    """A timm model loaded through its checkpoint filter from an official release file at ``path``."""
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs)


def train_step(model, x):
    """Forward in train mode and backward a squared-output loss; returns the output."""
    model.train()
    out = model(x)
    out.float().pow(2).mean().backward()
    return out


def assert_grad_checkpointing_matches(model, x, rtol=1e-4, atol=1e-6):
    """A train step gives the same output and parameter gradients with gradient checkpointing on."""
    ref_out = train_step(model, x).detach()
    ref = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert ref
    model.zero_grad(set_to_none=True)
    model.set_grad_checkpointing(True)
    torch.testing.assert_close(train_step(model, x), ref_out, rtol=rtol, atol=atol)
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads.keys() == ref.keys()
    for n, g in grads.items():
        torch.testing.assert_close(g, ref[n], rtol=rtol, atol=atol, msg=lambda m, n=n: f'{n}: {m}')


def meta_param_count(name, **kwargs):
    """Parameter count of a registered model, built on the meta device (nothing allocated or initialised)."""
    with torch.device('meta'):
        model = timm.create_model(name, **kwargs)
    return sum(p.numel() for p in model.parameters())


def draw_flatten_params(model, std=0.5):
    """Random values for the zero-initialised FLatten parameters (positional encodings, focusing scales), so
    that loading them is checked."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(('positional_encoding', '.scale')):
                p.normal_(0, std)
    return model
