"""The grain input pipeline: source -> shard -> shuffle -> preprocess -> batch -> prefetch.

Preprocessing here is light (tokenising captions, casting); the log-mel spectrogram is
computed inside the model (:class:`mmtx.encoders.AudioEncoder`) where it runs on the
accelerator, so the pipeline ships raw waveforms.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grain
import ml_collections
import numpy as np

from mmtx.data.synthetic import SyntheticSource
from mmtx.data.tokenizer import Tokenizer

# Keys a pipeline batch carries besides the model inputs: attributes used by the metrics.
ATTRIBUTE_KEYS = ("shape", "colour", "size", "position")


def create_source(config: ml_collections.ConfigDict, split: str) -> Any:
    """The random-access source named by ``config.data.source`` for ``split``."""
    data = config.data
    if data.source == "synthetic":
        size = data.train_size if split == "train" else data.eval_size
        return SyntheticSource(
            split=split,
            seed=data.seed,
            size=size,
            image_size=config.model.image.image_size,
            sample_rate=config.model.audio.sample_rate,
            audio_seconds=config.model.audio.num_samples / config.model.audio.sample_rate,
        )
    raise ValueError(f"unknown config.data.source {data.source!r}; available: 'synthetic'")


def make_preprocess(
    config: ml_collections.ConfigDict, tokenizer: Tokenizer
) -> Callable[[dict[str, Any]], dict[str, np.ndarray]]:
    """Returns the per-example map: raw example -> model inputs of the configured modalities.

    Output (numpy): ``text`` int32 ``[T]`` and ``text_mask`` bool ``[T]``, ``image`` float32
    ``[H, W, C]`` in [0, 1], ``audio`` float32 ``[S]``, ``label`` int32 ``[]``, and the
    attribute ints in :data:`ATTRIBUTE_KEYS` that the source provides.
    """
    modalities = tuple(config.model.modalities)
    max_length = config.model.text.max_length

    def preprocess(example: dict[str, Any]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        if "text" in modalities:
            ids, mask = tokenizer(example["caption"], max_length)
            out["text"], out["text_mask"] = ids[0], mask[0]
        if "image" in modalities:
            out["image"] = np.asarray(example["image"], np.float32)
        if "audio" in modalities:
            out["audio"] = np.asarray(example["audio"], np.float32)
        if "label" in example:
            out["label"] = np.asarray(example["label"], np.int32)
        for key in ATTRIBUTE_KEYS:
            if key in example:
                out[key] = np.asarray(example[key], np.int32)
        return out

    return preprocess


def create_dataset(
    config: ml_collections.ConfigDict,
    split: str,
    tokenizer: Tokenizer,
    *,
    batch_size: int,
    train: bool,
    process_index: int = 0,
    process_count: int = 1,
) -> grain.IterDataset:
    """Builds the pipeline for one process.

    Training data is shuffled globally with ``config.data.seed`` (re-shuffled each epoch) and
    repeated forever; process ``i`` then reads elements ``i, i + P, ...`` of that one global
    order. So the P processes' batches of a step together hold exactly the examples of the
    one-process global batch, whatever the process count (a resumed or rescaled run sees the
    same data). Eval data is sharded the same way, read in order, once, with the last
    partial batch kept. Batches are dicts of numpy arrays with a leading ``batch_size`` axis
    (the per-process batch). Deterministic: the same config gives the same batches.
    """
    source = create_source(config, split)
    dataset = grain.MapDataset.source(source)
    if train:
        dataset = dataset.shuffle(seed=config.data.seed).repeat()
    dataset = dataset[process_index::process_count]
    dataset = dataset.map(make_preprocess(config, tokenizer))
    dataset = dataset.batch(batch_size, drop_remainder=train)
    read_options = grain.ReadOptions(
        num_threads=config.data.num_threads, prefetch_buffer_size=config.data.prefetch
    )
    return dataset.to_iter_dataset(read_options)


# Which synthetic attributes each modality expresses: retrieval between two modalities
# counts a hit when the retrieved item agrees on the attributes both express (audio has
# no position).
MODALITY_ATTRIBUTES = {
    "text": ("shape", "colour", "size", "position"),
    "image": ("shape", "colour", "size", "position"),
    "audio": ("shape", "colour", "size"),
}
