"""LiT (Zhai et al. 2022, "Locked-image Tuning"): a pretrained image tower, locked, and a text
tower tuned to it with the contrastive loss, on the built-in synthetic data.

    python -m mmtx.import_checkpoint --family=open_clip --path=clip.safetensors \
        --tokenizer=bpe_simple_vocab_16e6.txt.gz --workdir=/tmp/clip
    python -m mmtx.main --config=configs/lit.py:/tmp/clip --workdir=/tmp/lit

``arg`` is the workdir of a two-tower model (an imported CLIP/SigLIP, or any mmtx run): its
``config.json`` gives this config's ``model``, ``fusion``, ``tokenizer`` and ``loss`` fields,
so the shapes fit its params, and it becomes ``train.init_from`` (the newest intact
checkpoint is loaded into the fresh model: the image tower and its projection as they are,
the text tower as the starting point). ``--config.train.init_from=OTHER`` still changes the
source afterwards, but the model fields come from ``arg``: give a source of the same shapes.
Without ``arg``, or with a size variant (``tiny`` | ``small`` | ``base`` | ``large``), it is a
text + image model of that size (default tiny) and no source, for trying the options (with
``--config.train.init_from=DIR`` of a run of that config).

What is locked: ``image/`` (patches, position table, blocks) and ``image_head/`` (the image
tower's projection to the shared embedding): big_vision's LiT freezes ``img/.*``, which holds
both. They get no optimizer state and stay bit-identical; ``logit_scale`` trains with the
text tower. docs/usage.md, "Fine-tuning", shows a run from the tests' small random CLIP
(tests/checkpoints/fixtures/open_clip): the mechanics, with metrics near chance, since its
image features are random.
"""

import json
import os

from mmtx import config as config_lib

# The fields taken from the source workdir's config.json: what decides the params' shapes
# and how inputs are read and compared.
MODEL_FIELDS = ("model", "fusion", "tokenizer", "loss")


def get_config(arg: str | None = None):
    """LiT from the workdir ``arg`` (see the module docstring)."""
    config = config_lib.default_config()
    if arg and arg not in config_lib.VARIANTS:
        workdir = os.path.abspath(os.path.expanduser(arg))
        with open(os.path.join(workdir, "config.json")) as f:
            saved = json.load(f)
        config_lib.merge_overrides(config, {k: saved[k] for k in MODEL_FIELDS if k in saved})
        # An imported workdir keeps its tokenizer file inside it, named relative to it.
        model_file = config.tokenizer.model_file
        if model_file and not os.path.isabs(model_file):
            config.tokenizer.model_file = os.path.join(workdir, model_file)
        config.train.init_from = workdir
    else:
        config_lib.apply_variant(config, arg or "tiny")
        config.model.modalities = ("text", "image")
        config.fusion.type = "none"
        config.model.num_classes = 0
        config.loss.classification_weight = 0.0
    config.model.modalities = tuple(m for m in config.model.modalities if m in ("text", "image"))
    config.train.frozen = ("^image/", "^image_head/")
    config.train.steps = 300
    config.train.batch_size = 64
    config.train.learning_rate = 3e-4  # the text tower starts from its pretrained weights
    config.train.warmup_steps = 30
    config.train.eval_every = 100
    config.train.checkpoint_every = 100
    config.data.source = "synthetic"
    return config
