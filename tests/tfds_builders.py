"""Small TFDS builders for the tests: written here, prepared into a temp dir, no download.

``TinyMultimodal`` has an image (varying sizes), several captions, an 8 kHz audio clip and a
label per example; ``TinyImageText`` has only an image and a caption, so it can be read
without TensorFlow. Example ``i`` of each split is generated from ``i`` alone and its first
caption reads ``"<split> example <i>"``, so tests can tell examples apart.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

SPLIT_SIZES = {"train": 24, "test": 10}
AUDIO_RATE = 8000
NUM_LABELS = 5


def example(split: str, index: int, *, audio: bool = True) -> dict:
    """The raw example ``index`` of ``split`` (uint8 image, captions, float32 audio, label)."""
    rng = np.random.default_rng([index, len(split)])
    height, width = (30, 40) if index % 2 else (48, 36)
    out = {
        "image": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
        "captions": {"text": [f"{split} example {index}", f"another caption {index}"]},
        "label": index % NUM_LABELS,
    }
    if audio:
        out["audio"] = rng.uniform(-0.5, 0.5, AUDIO_RATE // 2 + 100 * index).astype(np.float32)
    return out


class TinyMultimodal(tfds.core.GeneratorBasedBuilder):
    """Image + captions + audio + label."""

    VERSION = tfds.core.Version("1.0.0")
    WITH_AUDIO = True

    def _info(self) -> tfds.core.DatasetInfo:
        features = {
            "image": tfds.features.Image(shape=(None, None, 3)),
            "captions": tfds.features.Sequence({"text": tfds.features.Text()}),
            "label": tfds.features.ClassLabel(num_classes=NUM_LABELS),
        }
        if self.WITH_AUDIO:
            features["audio"] = tfds.features.Audio(
                shape=(None,), dtype=np.float32, sample_rate=AUDIO_RATE
            )
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(split, n) for split, n in SPLIT_SIZES.items()}

    def _generate_examples(self, split: str, size: int):
        for index in range(size):
            yield index, example(split, index, audio=self.WITH_AUDIO)


class TinyImageText(TinyMultimodal):
    """Image + captions + label, no audio."""

    WITH_AUDIO = False


def prepare(builder_class: type, data_dir: str) -> str:
    """Prepares ``builder_class`` into ``data_dir`` as array_record; returns its TFDS name."""
    builder = builder_class(data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare()
    return builder.name


VIDEO_FRAMES, VIDEO_SIDE = 6, 24


def video_example(split: str, index: int) -> dict:
    """Raw example ``index`` of ``split`` of :class:`TinyVideoText`: a uint8 clip whose frame
    ``t`` is filled with ``index + 10 t`` and captions; example 1 has no caption (an empty
    sequence), which the pipeline must mark absent."""
    frames = np.arange(VIDEO_FRAMES, dtype=np.int64)[:, None, None, None] * 10 + index
    clip = np.broadcast_to(frames, (VIDEO_FRAMES, VIDEO_SIDE, VIDEO_SIDE, 3)).astype(np.uint8)
    texts = [] if index == 1 else [f"{split} clip {index}"]
    return {"video": clip, "captions": {"text": texts}}


class TinyVideoText(tfds.core.GeneratorBasedBuilder):
    """A video clip + captions (the fourth modality through a TFDS ``Video`` feature)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self) -> tfds.core.DatasetInfo:
        features = {
            "video": tfds.features.Video(shape=(None, VIDEO_SIDE, VIDEO_SIDE, 3)),
            "captions": tfds.features.Sequence({"text": tfds.features.Text()}),
        }
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
        return {"test": self._generate_examples("test", 4)}

    def _generate_examples(self, split: str, size: int):
        for index in range(size):
            yield index, video_example(split, index)
