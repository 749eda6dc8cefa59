"""The reference performance workload: a small CLIP (text + image, softmax contrastive loss).

    python -m mmtx.main --config=configs/bench_clip.py --workdir=/tmp/clip
    .venv/bin/python benchmarks/train_step.py --config=configs/bench_clip.py

Both towers are width 256, 4 blocks of 4 heads (head dim 64) with MLP 1024; the image tower
sees 64x64x3 images as 8x8 patches (64 tokens, a linear patch stem), the text tower 64 byte
tokens (vocabulary 259). Both project to a 256-d embedding; the only loss is the CLIP
softmax contrastive loss (no classifier, no attribute heads). AdamW, batch 64, float32. The
same model is built in open_clip by ``benchmarks/peers/open_clip_step.py`` so that the two
libraries' train steps can be compared (``benchmarks/compare_open_clip.py``).

Late (gated) fusion is the cheapest fusion: two ``[B, 256] -> [B, 256]`` projections whose
output feeds no loss term here, so XLA removes it from the train step.
"""

from mmtx import config as config_lib

WIDTH = 256
DEPTH = 4
HEADS = 4
MLP_DIM = 1024


def get_config(arg: str | None = None):
    """Returns the ConfigDict of the benchmark workload (``arg`` is not used)."""
    del arg
    config = config_lib.default_config()
    config.variant = "bench_clip"
    config.dtype = "float32"
    config.model.modalities = ("text", "image")
    config.model.embed_dim = 256
    config.model.num_classes = 0
    config.model.remat = "none"
    # Unrolled blocks: the step is 1.2-1.3x faster than with nn.scan on a 2-core CPU (XLA:CPU
    # fuses and schedules across blocks; benchmarks/README.md), for a similar compile time.
    config.model.scan_layers = False
    tower = {"width": WIDTH, "depth": DEPTH, "num_heads": HEADS, "mlp_dim": MLP_DIM}
    config.model.text.update(tower)
    config.model.text.vocab_size = 0  # the byte tokenizer's 259
    config.model.text.max_length = 64
    config.model.image.update(tower)
    config.model.image.image_size = 64
    config.model.image.patch_size = 8
    config.model.image.channels = 3
    config.model.image.stem = "patch"
    config.fusion.type = "gated"
    config.fusion.update(tower)

    config.loss.contrastive = "softmax"
    config.loss.contrastive_weight = 1.0
    config.loss.classification_weight = 0.0
    config.loss.attribute_weight = 0.0

    config.train.batch_size = 64
    config.train.steps = 1000
    config.train.learning_rate = 1e-3
    config.train.warmup_steps = 100
    return config
