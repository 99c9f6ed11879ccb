"""The OpenMMLab stack is installed and works on this torch: compiled mmcv ops, mmdet and mmseg models."""
import os

import pytest
import torch

pytestmark = pytest.mark.mm


def test_mmcv_ops_nms_and_roi_align():
    from mmcv.ops import nms, roi_align
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.], [50., 50., 60., 60.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    dets, keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
    assert torch.allclose(dets[:, 4], torch.tensor([0.9, 0.7]))

    # feat[y, x] = 4y + x is linear, so bilinear sampling is exact and the pooled value is analytic
    feat = torch.arange(16.).reshape(1, 1, 4, 4)
    rois = torch.tensor([[0., 0., 0., 4., 4.]])  # the whole map
    # autograd Function: positional args (output_size, spatial_scale, sampling_ratio, pool_mode, aligned)
    aligned = roi_align(feat, rois, (1, 1), 1.0, 2, 'avg', True)  # samples at pixel centres 0.5, 2.5
    assert aligned.shape == (1, 1, 1, 1)
    assert aligned.item() == pytest.approx(feat.mean().item(), abs=1e-4)
    legacy = roi_align(feat, rois, (1, 1), 1.0, 2, 'avg', False)  # samples at 1 and 3
    assert legacy.item() == pytest.approx(4 * 2 + 2, abs=1e-4)


def _zoo_config(package, rel_path):
    import importlib
    from mmengine.config import Config
    pkg = importlib.import_module(package)
    path = os.path.join(os.path.dirname(pkg.__file__), '.mim', 'configs', rel_path)
    assert os.path.isfile(path), f'model zoo config missing: {path}'
    return Config.fromfile(path)


def _small_resnet(backbone):
    backbone.update(depth=18, init_cfg=None, norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False)


def test_mask_rcnn_train_step_and_predict():
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    from mmdet.structures.mask import BitmapMasks
    from mmdet.utils import register_all_modules
    register_all_modules()
    cfg = _zoo_config('mmdet', 'mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py')
    _small_resnet(cfg.model.backbone)
    cfg.model.neck.in_channels = [64, 128, 256, 512]
    model = MODELS.build(cfg.model)
    model.init_weights()

    h, w = 128, 160
    images = torch.rand(2, 3, h, w) * 255
    samples = []
    for i in range(2):
        s = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), scale_factor=(1., 1.),
                                         batch_input_shape=(h, w)))
        inst = InstanceData()
        inst.bboxes = torch.tensor([[10., 20., 60., 90.], [70., 30., 150., 120.]])
        inst.labels = torch.tensor([1, 5])
        masks = torch.zeros(2, h, w, dtype=torch.uint8)
        masks[0, 20:90, 10:60] = 1
        masks[1, 30:120, 70:150] = 1
        inst.masks = BitmapMasks(masks.numpy(), h, w)
        s.gt_instances = inst
        samples.append(s)
    data = model.data_preprocessor(dict(inputs=list(images), data_samples=samples), training=True)
    model.train()
    losses = model(**data, mode='loss')
    total = sum(v.sum() for k, v in losses.items() if 'loss' in k and isinstance(v, torch.Tensor)) + \
        sum(sum(x) for k, x in losses.items() if 'loss' in k and isinstance(x, list))
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)

    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(dict(inputs=list(images), data_samples=samples), training=False)
        preds = model(**data, mode='predict')
    assert len(preds) == 2
    assert preds[0].pred_instances.bboxes.shape[-1] == 4
    assert hasattr(preds[0].pred_instances, 'masks')


def test_upernet_train_step_and_predict():
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    from mmengine.structures import PixelData
    from mmseg.utils import register_all_modules
    register_all_modules()
    cfg = _zoo_config('mmseg', 'upernet/upernet_r50_4xb2-40k_cityscapes-512x1024.py')
    cfg.model.backbone.update(depth=18, init_cfg=None, norm_cfg=dict(type='BN', requires_grad=True),
                              strides=(1, 2, 2, 2), dilations=(1, 1, 1, 1))
    cfg.model.pretrained = None
    cfg.model.decode_head.update(in_channels=[64, 128, 256, 512], channels=64, norm_cfg=dict(type='BN'))
    cfg.model.auxiliary_head.update(in_channels=256, channels=32, norm_cfg=dict(type='BN'))
    cfg.model.data_preprocessor.size = (64, 96)
    model = MODELS.build(cfg.model)
    model.init_weights()

    h, w = 64, 96
    images = torch.rand(2, 3, h, w) * 255
    samples = []
    for _ in range(2):
        s = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
        s.gt_sem_seg = PixelData(data=torch.randint(0, 19, (1, h, w)))
        samples.append(s)
    model.train()
    data = model.data_preprocessor(dict(inputs=list(images), data_samples=samples), training=True)
    losses = model(**data, mode='loss')
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(dict(inputs=list(images), data_samples=samples), training=False)
        preds = model(**data, mode='predict')
    assert preds[0].pred_sem_seg.data.shape == (1, h, w)
    assert int(preds[0].pred_sem_seg.data.max()) < 19
