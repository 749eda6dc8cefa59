"""Keyword spotting on Speech Commands (12 classes) from TensorFlow Datasets: audio only.

Prepare the data once, on a machine with internet (about 9 GB; ``pip install 'mmtx[tfds]'``:
TFDS's Audio feature needs TensorFlow, to prepare and also to read)::

    tfds build speech_commands --data_dir=$HOME/tensorflow_datasets \
        --file_format=array_record

then train::

    python -m mmtx.main --config=configs/speech_commands.py \
        --config.data.data_dir=$HOME/tensorflow_datasets --workdir=/tmp/speech

The clips are 16 kHz int16, at most 1 s; they are scaled to [-1, 1] and zero-padded to
``model.audio.num_samples``. ``arg`` picks the size variant (default ``small``).
"""

from mmtx import config as config_lib


def get_config(arg: str | None = None):
    """Returns the ConfigDict for size variant ``arg`` (default ``small``)."""
    config = config_lib.default_config()
    config_lib.apply_variant(config, arg or "small")
    config.model.modalities = ("audio",)
    config.model.num_classes = 12  # 10 words, silence, unknown
    config.loss.contrastive = "none"
    config.fusion.type = "gated"
    config.model.audio.sample_rate = 16000
    config.model.audio.num_samples = 16000

    config.data.source = "tfds:speech_commands"
    config.data.train_split = "train"
    config.data.eval_split = "validation"
    config.data.features.audio = "audio"
    config.data.features.label = "label"
    config.data.augment = True  # random crop of any clip longer than num_samples

    config.train.batch_size = 128
    config.eval.batch_size = 512
    config.train.steps = 10_000
    config.train.learning_rate = 1e-3
    config.train.warmup_steps = 500
    config.train.eval_every = 1_000
    config.train.checkpoint_every = 1_000
    return config
