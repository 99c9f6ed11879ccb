# Any timm model (the FLatten / Agent variants register on import) as an mmengine model. Training batches are mixed
# with timm's Mixup (mixup 0.8, cutmix 1.0, one of the two each batch) and the loss is the soft-target cross-entropy
# against label-smoothed (0.1) targets, as in the official FLatten / Agent scripts.
model = dict(
    type='TimmClassifier',
    model_name=None,  # set by each config
    num_classes=1000,
    drop_path_rate=0.1,
    label_smoothing=0.1,
    mixup=dict(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, mode='batch'))
