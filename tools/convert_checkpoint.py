"""Convert an official FLatten / Agent-Attention release file (or any checkpoint this toolkit reads) into a plain
safetensors state dict in this toolkit's timm layout.

The output loads with ``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=out))`` and with
the mm backbones' ``init_cfg=dict(type='Pretrained', checkpoint=out)``.

    python tools/convert_checkpoint.py flatten_swin_t.pth flatten_swin_t.safetensors --model flatten_swin_t
    python tools/convert_checkpoint.py agent_swin_b.pth agent_swin_b_384.safetensors --model agent_swin_b_384

``--model`` names the timm model the weights are for; the weights go through that model's checkpoint filter (resizing
positional encodings and tables when its resolution differs from the file's) and are checked to fit it exactly.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

import timm
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import linattn_vision  # noqa: E402,F401  (registers the models)
from linattn_vision import checkpoint as ckpt  # noqa: E402


def convert(src: str, dst: str, model_name: str, use_ema: bool = False) -> dict[str, torch.Tensor]:
    if model_name not in timm.list_models():
        close = timm.list_models(f'*{model_name.split("_")[0]}*')[:8]
        raise SystemExit(f'unknown model {model_name!r}; similar: {", ".join(close) or "none"}')
    state_dict = ckpt.load_state_dict_file(src, prefer_ema=use_ema)
    model = timm.create_model(model_name, pretrained=False)
    filter_fn = getattr(importlib.import_module(type(model).__module__), 'checkpoint_filter_fn', None)
    if filter_fn is not None:
        state_dict = filter_fn(state_dict, model)
    ckpt.check_state_dict_fits(model, state_dict, source=src)
    ckpt.save_safetensors(state_dict, dst)
    return state_dict


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', help='official .pth, timm .pth/.bin/.safetensors or mmengine checkpoint')
    parser.add_argument('dst', help='output .safetensors file')
    parser.add_argument('--model', required=True, help='timm model name, e.g. flatten_swin_t')
    parser.add_argument('--ema', action='store_true', help='take the EMA weights (state_dict_ema) when present')
    args = parser.parse_args(argv)
    if not args.dst.endswith('.safetensors'):
        parser.error('dst must end with .safetensors')
    try:
        state_dict = convert(args.src, args.dst, args.model, args.ema)
    except (ckpt.CheckpointError, FileNotFoundError) as e:
        raise SystemExit(f'error: {e}')
    n = sum(v.numel() for v in state_dict.values())
    print(f'wrote {args.dst}: {len(state_dict)} tensors, {n / 1e6:.2f}M values, fits {args.model}')


if __name__ == '__main__':
    main()
