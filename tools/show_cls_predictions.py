#!/usr/bin/env python
"""Draw a grid of a classifier's predictions on its test split: each image titled with the predicted class (and the
true one when they differ), green when right, red when wrong.

    python tools/show_cls_predictions.py CONFIG CHECKPOINT [--out predictions.png] [--num 24] [--cfg-options ...]

For the ImageNet-style classification configs (``default_scope = 'linattn_vision'``); needs matplotlib.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp

import torch
from mmengine.config import DictAction

from linattn_vision.mm import launch


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help='classification config')
    parser.add_argument('checkpoint', help='checkpoint of that config (or any file tools/test.py takes)')
    parser.add_argument('--out', default='predictions.png', help='PNG to write (default: %(default)s)')
    parser.add_argument('--num', type=int, default=24, help='images in the grid, spread over the split')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    args = parser.parse_args(argv)
    if args.num < 1:
        parser.error(f'--num must be >= 1, got {args.num}')
    return args


def predict_grid(cfg, checkpoint: str, num: int):
    """(image path, predicted class, true class, score) for ``num`` test images spread evenly over the split."""
    from mmengine.registry import init_default_scope
    from linattn_vision.mm.classification import load_classifier_checkpoint
    from linattn_vision.mm.registry import DATASETS, MODELS
    init_default_scope(launch.CLASSIFICATION_SCOPE)
    model = MODELS.build(cfg.model)
    load_classifier_checkpoint(model, checkpoint, strict=True)
    model.eval()
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    step = max(1, len(dataset) // num)
    indices = list(range(0, len(dataset), step))[:num]
    rows = []
    with torch.no_grad():
        batch = [dataset[i] for i in indices]
        inputs = torch.stack([sample['inputs'] for sample in batch])
        predictions = model(inputs, mode='predict')
    for index, sample, prediction in zip(indices, batch, predictions):
        path = dataset.samples[index][0]
        rows.append((path, dataset.classes[prediction['pred_label']], dataset.classes[sample['labels']],
                     float(prediction['pred_score'].max())))
    return rows, dataset


def class_names(dataset) -> dict[str, str]:
    """ImageNet folder names (wnids) -> readable names from the split's LOC_synset_mapping.txt, when there is one."""
    mapping = osp.join(dataset.data_root, 'LOC_synset_mapping.txt')
    names = {}
    if osp.isfile(mapping):
        with open(mapping) as f:
            for line in f:
                wnid, _, name = line.strip().partition(' ')
                names[wnid] = name.split(',')[0]
    return names


def draw(rows, names: dict[str, str], out: str, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from PIL import Image

    columns = min(8, len(rows))
    lines = (len(rows) + columns - 1) // columns
    fig, axes = plt.subplots(lines, columns, figsize=(1.6 * columns, 1.8 * lines + 0.4), dpi=100, squeeze=False)
    for ax in axes.flat:
        ax.axis('off')
    correct = 0
    for ax, (path, pred, gt, score) in zip(axes.flat, rows):
        with Image.open(path) as img:
            ax.imshow(img.convert('RGB'))
        right = pred == gt
        correct += right
        label = f'{names.get(pred, pred)} {score:.2f}' + ('' if right else f'\n(is {names.get(gt, gt)})')
        ax.set_title(label, fontsize=7, color='green' if right else 'red')
    fig.suptitle(f'{title}: {correct}/{len(rows)} right', fontsize=9)
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def main(argv=None) -> str:
    args = parse_args(argv)
    with launch.user_errors_as_one_line('show_cls_predictions.py'):
        if not osp.isfile(args.checkpoint):
            raise FileNotFoundError(f'checkpoint file not found: {args.checkpoint}')
        cfg = launch.load_config(args.config, args.cfg_options)
        if launch.config_scope(cfg) != launch.CLASSIFICATION_SCOPE:
            raise launch.UserInputError(f'{args.config} is not a classification config (default_scope '
                                        f'{launch.config_scope(cfg)!r}); detection and segmentation draw their '
                                        f'predictions with tools/test.py --show-dir')
        launch.check_inputs(cfg, loaders=('test',))
        rows, dataset = predict_grid(cfg, args.checkpoint, args.num)
        draw(rows, class_names(dataset), args.out, osp.splitext(osp.basename(args.config))[0])
    print(f'predictions: {args.out}')
    return args.out


if __name__ == '__main__':
    main()
