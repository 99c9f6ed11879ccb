"""Inference speed (images/s) and peak memory of a detection / segmentation config at its test size.

    python tools/benchmark.py configs/det/mask-rcnn_flatten-swin-t_fpn_1x_coco.py --amp
    python tools/benchmark.py configs/seg/fpn_agent-pvt-t_80k_ade20k-512x512.py --checkpoint work_dirs/x/iter_80000.pth

The whole test step runs (data preprocessor, backbone, heads, NMS / mask pasting / resizing to the original size) on
synthetic images of the config's test size: the test pipeline's Resize with keep_ratio applied to a 4:3 image, the
shape of most COCO and ADE20K images (800x1067 for 1333x800, 512x683 for 2048x512). ``--shape H W`` overrides it.
Peak memory is torch's peak allocated CUDA memory, or the process' peak resident memory on CPU.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

# run from a checkout without installing; appended, so a linattn_vision on PYTHONPATH comes first (A/B runs)
sys.path.append(str(Path(__file__).resolve().parents[1]))


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description='images/s and peak memory of a det/seg config at its test size')
    parser.add_argument('config', help='config file')
    parser.add_argument('--checkpoint', help='weights to load (speed does not depend on them)')
    parser.add_argument('--shape', type=int, nargs=2, default=None, metavar=('H', 'W'), help='input image size')
    parser.add_argument('--batch-size', type=int, default=1)
    parser.add_argument('--iters', type=int, default=50, help='timed iterations')
    parser.add_argument('--warmup', type=int, default=5, help='untimed iterations first')
    parser.add_argument('--amp', action='store_true', help='bfloat16 autocast on CUDA (float16 with --fp16)')
    parser.add_argument('--fp16', action='store_true', help='float16 instead of bfloat16 under --amp')
    parser.add_argument('--device', default=None, help='cuda or cpu (default: cuda when available)')
    parser.add_argument('--out', help='write the numbers as JSON here')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config keys, key=value')
    return parser.parse_args(argv)


def _find_resize(pipeline):
    for step in pipeline or []:
        if step.get('type') in ('Resize', 'RandomResize', 'RandomChoiceResize'):
            return step
        for key in ('transforms', 'policies'):
            if key in step:  # TestTimeAug / RandomChoice nest their transforms
                nested = step[key]
                flat = [t for group in nested for t in (group if isinstance(group, list) else [group])]
                found = _find_resize(flat)
                if found:
                    return found
    return None


def test_size(cfg, aspect=4 / 3):
    """(H, W) the test pipeline gives a landscape image of the given aspect ratio."""
    pipeline = cfg.get('test_dataloader', {}).get('dataset', {}).get('pipeline') or cfg.get('test_pipeline')
    resize = _find_resize(pipeline)
    if resize is None or 'scale' not in resize:
        raise ValueError(f'{cfg.filename}: no Resize with a scale in the test pipeline; pass --shape H W')
    scale = resize['scale']
    if isinstance(scale, int):
        scale = (scale, scale)
    if not resize.get('keep_ratio', False):
        return int(scale[1]), int(scale[0])  # mmcv scales are (w, h)
    short_max, long_max = min(scale), max(scale)
    ratio = min(short_max / 1.0, long_max / aspect)  # the short side of a 1 x aspect image
    return int(round(ratio)), int(round(ratio * aspect))


def make_batch(cfg, shape, batch_size):
    """A data batch as the test dataloader yields it: uint8 CHW images and data samples with their metainfo."""
    import torch
    h, w = shape
    meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), scale_factor=(1.0, 1.0), flip=False,
                flip_direction=None, img_id=0, img_path='synthetic.jpg')
    if cfg.get('default_scope') == 'mmseg':
        from mmseg.structures import SegDataSample as Sample
    else:
        from mmdet.structures import DetDataSample as Sample
    generator = torch.Generator().manual_seed(0)
    inputs = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=generator) for _ in range(batch_size)]
    return dict(inputs=inputs, data_samples=[Sample(metainfo=dict(meta, img_id=i)) for i in range(batch_size)])


def main(argv=None):
    args = parse_args(argv)
    import torch
    from mmengine.registry import MODELS, init_default_scope

    from linattn_vision.mm import launch
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    with launch.user_errors_as_one_line('benchmark.py'):
        cfg = launch.load_config(args.config, args.cfg_options)
        init_default_scope(launch.require_dense_scope(cfg))
        shape = tuple(args.shape) if args.shape else test_size(cfg)
        cfg.model.backbone.pop('init_cfg', None)  # speed does not depend on the weights
        cfg.model.pop('pretrained', None)
        model = MODELS.build(cfg.model)
        if args.checkpoint:
            from mmengine.runner import load_checkpoint
            load_checkpoint(model, args.checkpoint, map_location='cpu')
    model = model.to(device).eval()
    batch = make_batch(cfg, shape, args.batch_size)
    dtype = torch.float16 if args.fp16 else torch.bfloat16
    use_amp = args.amp and device.type == 'cuda'

    def step():
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=use_amp):
            return model.test_step(batch)

    for _ in range(args.warmup):
        step()
    if device.type == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.iters):
        step()
    if device.type == 'cuda':
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    if device.type == 'cuda':
        peak_mib, peak_kind = torch.cuda.max_memory_allocated() / 2**20, 'CUDA allocated'
    else:
        peak_mib, peak_kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 'process RSS'
    results = dict(config=args.config, shape=list(shape), batch_size=args.batch_size, iters=args.iters,
                   device=str(torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'),
                   amp=use_amp and str(dtype).replace('torch.', ''),
                   images_per_s=round(args.iters * args.batch_size / elapsed, 3),
                   ms_per_iter=round(1000 * elapsed / args.iters, 2),
                   peak_mem_mib=round(peak_mib, 1), peak_mem_kind=peak_kind)
    print(f'{Path(args.config).stem}: {shape[0]}x{shape[1]} batch {args.batch_size} on {results["device"]}'
          f'{" (" + results["amp"] + " autocast)" if use_amp else ""}: {results["images_per_s"]:.2f} images/s, '
          f'{results["ms_per_iter"]:.1f} ms/iter, peak {results["peak_mem_mib"]:.0f} MiB ({peak_kind})')
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
