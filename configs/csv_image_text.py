"""CLIP-style image-text training on your own CSV of image files and captions.

The CSV is open_clip's: a header row, a ``filepath`` column (image paths, relative to the
CSV's directory or absolute, local or a bucket URL) and a ``title`` column (captions),
separated by tabs::

    python -m mmtx.main --config=configs/csv_image_text.py \\
        --config.data.source=csv:/data/train.csv --workdir=/tmp/own

Other columns or separators: ``--config.data.columns.image=path``,
``--config.data.columns.text=caption``, ``--config.data.csv_separator=,``. The last
``data.holdout`` rows are held out and evaluated (image<->text recall@1/5); point
``--config.data.eval_source=csv:/data/val.csv`` at a separate file instead. Bad rows (a missing
or undecodable image, an empty caption) are skipped and counted in the progress line and in
``summary.json``. ``arg`` picks the size variant (default ``small``, for a CPU; ``base`` for
an accelerator: ViT-B/16 at 224 px).
"""

from mmtx import config as config_lib


def get_config(arg: str | None = None):
    """Returns the ConfigDict for size variant ``arg`` (default ``small``)."""
    variant = arg or "small"
    config = config_lib.default_config()
    config_lib.apply_variant(config, variant)
    config.model.modalities = ("text", "image")
    config.model.num_classes = 0  # contrastive only
    config.loss.contrastive = "softmax"
    config.fusion.type = "none"  # two towers, as CLIP
    config.model.text.max_length = 64  # UTF-8 bytes
    config.model.image.image_size = 64
    config.model.image.patch_size = 8
    config.model.image.stem = "conv"
    if variant in ("base", "large"):
        config.model.text.max_length = 77
        config.model.image.image_size = 224
        config.model.image.patch_size = 16
        config.model.image.stem = "patch"
        config.train.batch_size = 1024
        config.eval.batch_size = 1000
        config.data.num_workers = 8
    config.model.image.mean = (0.48145466, 0.4578275, 0.40821073)  # CLIP's RGB statistics
    config.model.image.std = (0.26862954, 0.26130258, 0.27577711)

    config.data.source = "csv:train.csv"
    config.data.holdout = 500  # the last 500 rows: image<->text retrieval
    config.data.augment = True  # a random-resized crop (open_clip's scale) + flip
    config.data.crop_scale = (0.9, 1.0)
    config.eval.zero_shot = False  # captions, no class names

    config.train.steps = 5_000
    config.train.learning_rate = 1e-3
    config.train.warmup_steps = 100
    config.train.weight_decay = 0.1
    config.train.eval_every = 1_000
    config.train.checkpoint_every = 500
    return config
