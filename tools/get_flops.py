"""FLOPs and parameters of a detection / segmentation config: the backbone alone and the whole model.

    python tools/get_flops.py configs/det/mask-rcnn_flatten-swin-t_fpn_1x_coco.py --shape 800 1280
    python tools/get_flops.py configs/seg/upernet_flatten-swin-t_160k_ade20k-512x512.py --shape 512 2048

Counts follow fvcore / mmengine's convention (one fused multiply-add = one FLOP) on a traced forward pass in tensor
mode (no NMS or post-processing). Attention through ``scaled_dot_product_attention`` is counted (mmengine does not
by default), focused linear attention through its exact PyTorch formulation; custom mmcv ops such as RoIAlign are
not counted, as in mmdet's own get_flops.py. Mask heads run on the first 100 RoIs, as mmdet's StandardRoIHead does
in tensor mode (Cascade RoI heads run theirs on all 1000 proposals there, 10x the papers' convention).
Default shapes: 800x1280 for detection (the papers' convention), the config's crop size for segmentation.
"""
from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description='FLOPs and parameters of a det/seg config (backbone and model)')
    parser.add_argument('config', help='config file')
    parser.add_argument('--shape', type=int, nargs='+', default=None, help='input size: H W (or one number)')
    parser.add_argument('--backbone-only', action='store_true', help='count the backbone only')
    parser.add_argument('--out', help='write the numbers as JSON here')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config keys, key=value')
    return parser.parse_args(argv)


def _prod(shape):
    n = 1
    for s in shape:
        n *= int(s)
    return n


def sdpa_flop_jit(inputs, outputs):
    """FLOPs of scaled_dot_product_attention: q @ k^T and attn @ v, one MAC each (fvcore convention)."""
    from mmengine.analysis.jit_handles import get_shape
    q, k, v = (get_shape(x) for x in inputs[:3])
    batch = _prod(q[:-2])
    return batch * q[-2] * k[-2] * q[-1] + batch * q[-2] * k[-2] * v[-1]


def count(model, inputs):
    """(flops, params) of ``model`` on ``inputs`` (a tuple of tensors)."""
    from mmengine.analysis import FlopAnalyzer, parameter_count

    from linattn_vision.ops.focused_linear import use_reference
    analyzer = FlopAnalyzer(model, inputs)
    analyzer.set_op_handle('aten::scaled_dot_product_attention', sdpa_flop_jit)
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    # the tracer must see the attention's matmuls, not the fused kernels' opaque op; a first call builds what the
    # models cache per input size for inference (position biases and encodings resized from parameters by matmuls),
    # so that the count covers the per-image work, as the papers' counts do
    with use_reference():
        model(*inputs)
        flops = analyzer.total()
    return flops, parameter_count(model)['']


def default_shape(cfg):
    if cfg.get('default_scope') == 'mmseg':
        size = cfg.get('crop_size') or cfg.model.get('data_preprocessor', {}).get('size') or (512, 512)
        return tuple(size)
    return 800, 1280


def build_model(cfg):
    """Build the config's model without loading any pretrained file (FLOPs don't depend on weights)."""
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    cfg.model.backbone.pop('init_cfg', None)
    cfg.model.backbone.pop('pretrained', None)
    cfg.model.pop('pretrained', None)
    model = MODELS.build(cfg.model)
    return model.eval()


MASK_ROIS = 100


def cap_cascade_mask_rois(model):
    """Cascade RoI heads run each stage's mask head on every proposal in tensor mode; count it on the first
    MASK_ROIS RoIs like StandardRoIHead (and mmdet 2.x's forward_dummy, which the papers' numbers come from). The
    other rows are zeros, which cost no FLOPs, so the heads' downstream code sees the shapes it expects."""
    roi_head = getattr(model, 'roi_head', None)
    if roi_head is None or not hasattr(roi_head, 'num_stages') or not getattr(roi_head, 'with_mask', False):
        return
    mask_forward = roi_head._mask_forward

    def capped(stage, x, rois, *args, **kwargs):
        results = mask_forward(stage, x, rois[:MASK_ROIS], *args, **kwargs)
        preds = results['mask_preds']
        full = preds.new_zeros((rois.shape[0],) + tuple(preds.shape[1:]))
        full[:preds.shape[0]] = preds
        return dict(results, mask_preds=full)
    roi_head._mask_forward = capped


def tensor_mode_inputs(cfg, model, shape):
    """Bind data samples so the model can be traced on a single image tensor in 'tensor' mode."""
    import torch
    h, w = shape
    image = torch.zeros(1, 3, h, w)
    meta = dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), batch_input_shape=(h, w),
                scale_factor=(1.0, 1.0))
    if cfg.get('default_scope') == 'mmseg':
        from mmseg.structures import SegDataSample
        samples = [SegDataSample(metainfo=meta)]
    else:
        from mmdet.structures import DetDataSample
        samples = [DetDataSample(metainfo=meta)]
    model.forward = partial(model.forward, data_samples=samples, mode='tensor')
    cap_cascade_mask_rois(model)
    return (image,)


def main(argv=None):
    args = parse_args(argv)
    import torch

    from linattn_vision.mm import launch
    with launch.user_errors_as_one_line('get_flops.py'):
        cfg = launch.load_config(args.config, args.cfg_options)
        launch.require_dense_scope(cfg)
        shape = tuple(args.shape) if args.shape else default_shape(cfg)
        if len(shape) == 1:
            shape = (shape[0], shape[0])
        model = build_model(cfg)
    image = torch.zeros(1, 3, *shape)
    results = {'config': args.config, 'shape': list(shape)}
    with torch.no_grad():
        flops, params = count(model.backbone, (image,))
        results['backbone'] = dict(gflops=round(flops / 1e9, 3), params_m=round(params / 1e6, 3))
        if not args.backbone_only:
            flops, params = count(model, tensor_mode_inputs(cfg, model, shape))
            results['model'] = dict(gflops=round(flops / 1e9, 3), params_m=round(params / 1e6, 3))
    print(f'input {shape[0]}x{shape[1]}')
    for part in ('backbone', 'model'):
        if part in results:
            print(f'{part:9s} {results[part]["gflops"]:9.2f} GFLOPs  {results[part]["params_m"]:8.2f} M params')
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
