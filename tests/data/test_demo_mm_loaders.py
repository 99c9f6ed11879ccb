"""The stock mmdet CocoDataset / CocoMetric and mmseg ADE20K loaders read the generated demo data unchanged."""
import numpy as np
import pytest

from linattn_vision.data import DEMO_CLASSES, DEMO_PALETTE, DEMO_SEG_CLASSES, DEMO_SEG_PALETTE, make_demo_data

pytestmark = pytest.mark.mm


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    return make_demo_data(tmp_path_factory.mktemp('demo'), tasks=['coco', 'ade'], num_train=4, num_val=3, size=64,
                          seed=1, progress=False, log=None)


def test_mmdet_coco_dataset_and_metric(demo):
    from mmcv.transforms import LoadImageFromFile
    from mmdet.datasets import CocoDataset
    from mmdet.datasets.transforms import LoadAnnotations, PackDetInputs
    from mmdet.evaluation import CocoMetric

    dataset = CocoDataset(
        data_root=str(demo['coco']), ann_file='annotations/instances_val2017.json', data_prefix=dict(img='val2017/'),
        metainfo=dict(classes=DEMO_CLASSES, palette=DEMO_PALETTE), filter_cfg=dict(filter_empty_gt=True, min_size=32),
        pipeline=[LoadImageFromFile(), LoadAnnotations(with_bbox=True, with_mask=True), PackDetInputs()])
    assert len(dataset) == 3 and dataset.metainfo['classes'] == DEMO_CLASSES

    metric = CocoMetric(ann_file=str(demo['coco'] / 'annotations' / 'instances_val2017.json'),
                        metric=['bbox', 'segm'], format_only=False)
    metric.dataset_meta = dataset.metainfo
    for index in range(len(dataset)):
        sample = dataset[index]
        inputs, data_sample = sample['inputs'], sample['data_samples']
        assert tuple(inputs.shape) == (3, 64, 64)
        gt = data_sample.gt_instances
        assert len(gt) >= 1 and gt.labels.max() < len(DEMO_CLASSES)
        masks = gt.masks.to_ndarray().astype(bool)
        assert masks.shape == (len(gt), 64, 64) and masks.reshape(len(gt), -1).any(1).all()
        ys, xs = np.nonzero(masks[0])  # the decoded polygon mask lies inside its box (1 px tolerance)
        x0, y0, x1, y1 = gt.bboxes.tensor[0].tolist()
        assert xs.min() >= x0 - 1 and xs.max() + 1 <= x1 + 1 and ys.min() >= y0 - 1 and ys.max() + 1 <= y1 + 1
        # the ground truth as a perfect prediction: CocoMetric must score it as such
        import torch
        prediction = dict(bboxes=gt.bboxes.tensor, labels=gt.labels, scores=torch.ones(len(gt)),
                          masks=torch.from_numpy(masks))
        metric.process({}, [dict(img_id=data_sample.img_id, ori_shape=data_sample.ori_shape, pred_instances=prediction)])
    results = metric.evaluate(len(dataset))
    assert results['coco/bbox_mAP'] == pytest.approx(1.0, abs=1e-3)
    assert results['coco/segm_mAP'] > 0.9  # polygon vs. pixel mask round trip


def test_mmseg_ade20k_loaders(demo):
    from mmcv.transforms import LoadImageFromFile
    from mmseg.datasets import ADE20KDataset, BaseSegDataset
    from mmseg.datasets.transforms import LoadAnnotations, PackSegInputs

    prefix = dict(img_path='images/validation', seg_map_path='annotations/validation')
    # what a demo config uses: the ADE20K layout and reduce_zero_label with the demo's own class list
    dataset = BaseSegDataset(
        data_root=str(demo['ade']), data_prefix=prefix, img_suffix='.jpg', seg_map_suffix='.png',
        reduce_zero_label=True, metainfo=dict(classes=DEMO_SEG_CLASSES, palette=DEMO_SEG_PALETTE),
        pipeline=[LoadImageFromFile(), LoadAnnotations(), PackSegInputs()])
    assert len(dataset) == 3 and dataset.metainfo['classes'] == DEMO_SEG_CLASSES
    values = set()
    for index in range(len(dataset)):
        labels = dataset[index]['data_samples'].gt_sem_seg.data
        assert tuple(labels.shape) == (1, 64, 64)
        values |= set(labels.unique().tolist())
    assert 0 in values and values <= set(range(len(DEMO_SEG_CLASSES))) | {255}
    assert len(values - {0, 255}) >= 2, f'label values after reduce_zero_label: {sorted(values)}'

    # the stock ADE20KDataset reads the same folders (its 150-name metainfo is what demo configs replace)
    stock = ADE20KDataset(data_root=str(demo['ade']), data_prefix=prefix,
                          pipeline=[LoadImageFromFile(), LoadAnnotations(), PackSegInputs()])
    assert len(stock) == 3
    stock_labels = stock[0]['data_samples'].gt_sem_seg.data
    assert set(stock_labels.unique().tolist()) <= set(range(len(DEMO_SEG_CLASSES))) | {255}
