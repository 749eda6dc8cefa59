"""Image-text contrastive training (CLIP-style) on COCO Captions from TensorFlow Datasets.

Prepare the data once, on a machine with internet (about 38 GB in ``array_record``; needs
``pip install 'mmtx[tfds]'`` because encoding the images uses TensorFlow)::

    tfds build coco_captions/2014 --data_dir=$HOME/tensorflow_datasets \
        --file_format=array_record

then train (reading needs no TensorFlow)::

    python -m mmtx.main --config=configs/coco_captions.py \
        --config.data.data_dir=$HOME/tensorflow_datasets --workdir=/tmp/coco

``arg`` picks the size variant (default ``base``: ViT-B/16 towers at 224 px, for a TPU VM
or GPU; ``tiny``/``small`` fit a CPU). The splits are Karpathy & Li's: train on
``train+restval`` (113k images), evaluate image<->text retrieval on ``val`` (5k images)
with all of each image's captions, as papers report it (``config.eval.all_captions``: image
-> text hits when any caption is in the top k, every caption a text -> image query); each
training step uses one of an image's five captions, picked at random.
"""

from mmtx import config as config_lib


def get_config(arg: str | None = None):
    """Returns the ConfigDict for size variant ``arg`` (default ``base``)."""
    variant = arg or "base"
    config = config_lib.default_config()
    config_lib.apply_variant(config, variant)
    config.model.modalities = ("text", "image")
    config.model.num_classes = 0  # contrastive only
    config.loss.contrastive = "softmax"
    config.fusion.type = "gated"  # cheap late fusion; retrieval uses the tower embeddings
    config.model.text.max_length = 96  # UTF-8 bytes; COCO captions average ~55
    if variant in ("base", "large"):
        config.model.image.image_size = 224
        config.model.image.patch_size = 16
        config.train.batch_size = 1024
        config.eval.batch_size = 1000
        config.data.num_workers = 8
    config.model.image.mean = (0.48145466, 0.4578275, 0.40821073)  # CLIP's RGB statistics
    config.model.image.std = (0.26862954, 0.26130258, 0.27577711)

    config.data.source = "tfds:coco_captions/2014"
    config.data.train_split = "train+restval"
    config.data.eval_split = "val"
    config.data.features.text = "captions/text"
    config.data.features.image = "image"
    config.data.augment = True

    config.train.steps = 20_000
    config.train.learning_rate = 5e-4
    config.train.warmup_steps = 1_000
    config.train.weight_decay = 0.2
    config.train.eval_every = 2_000
    config.train.checkpoint_every = 1_000
    return config
