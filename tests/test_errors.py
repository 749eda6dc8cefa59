"""Bad input at every public door gets a clear error naming the field, before any compile.

One table: (what is wrong, how it reaches mmtx, the error type, text the message must hold).
"""

import functools
import re

import numpy as np
import pytest

from mmtx import config as config_lib
from mmtx import create_model


def tiny_config():
    config = config_lib.apply_variant(config_lib.default_config(), "tiny")
    config.model.text.max_length = 16
    config.model.image.image_size, config.model.image.patch_size = 16, 8
    return config


@functools.cache
def model():
    return create_model(tiny_config())


def override(*, build: bool = False, **values):
    """Merges dotted-path overrides onto the default config (as a JSON config file would)
    and validates it; with ``build``, also builds the model from it (where what only the
    code can answer is checked: mmtx.model_checks)."""

    def run():
        nested: dict = {}
        for dotted, value in values.items():
            *parents, leaf = dotted.split("__")
            node = nested
            for name in parents:
                node = node.setdefault(name, {})
            node[leaf] = value
        config = config_lib.validate(config_lib.merge_overrides(tiny_config(), nested))
        if build:
            create_model(config)

    return run


def call(**inputs):
    return lambda: model()(**inputs)


def apply(batch):
    return lambda: model().apply(batch)


IMAGE = np.zeros((16, 16, 3), np.float32)
AUDIO = np.zeros(16000, np.float32)
TEXT = np.ones((2, 16), np.int32)


def spoiled(array, value):
    """A copy of ``array`` with one element set to ``value`` (NaN, inf)."""
    out = array.copy()
    out.flat[5] = value
    return out


BAD_INPUTS = [
    # Config: unknown / mistyped keys, invalid values.
    ("unknown key", override(model__text__widht=32), KeyError, "model.text.widht"),
    ("unknown section", override(trian__steps=3), KeyError, "trian"),
    ("negative size", override(model__text__width=-32), ValueError, "config.model.text.width"),
    ("zero batch", override(train__batch_size=0), ValueError, "config.train.batch_size"),
    ("unknown kernel", override(model__audio__attention="flash"), ValueError, "audio.attention"),
    ("unknown fusion", override(fusion__type="late", build=True), ValueError, "config.fusion.type"),
    ("bad nan policy", override(train__nonfinite="ignore"), ValueError, "train.nonfinite"),
    ("heads", override(fusion__num_heads=3), ValueError, "config.fusion.width"),
    # Raw inputs to mmtx.Model.
    ("image rank", call(image_features=np.zeros((2, 2, 16, 16, 3))), ValueError, "image"),
    ("image channels", call(image_features=np.zeros((16, 16, 5))), ValueError, "channels"),
    ("image range", call(image_features=np.full((16, 16, 3), 2.0)), ValueError, "[0, 1]"),
    ("audio rank", call(audio_inputs=np.zeros((2, 3, 16000))), ValueError, "audio"),
    ("empty string", call(text_inputs=""), ValueError, "empty"),
    ("one empty string", call(text_inputs=["ok", ""]), ValueError, "text_inputs[1]"),
    ("empty text list", call(text_inputs=[]), ValueError, "empty list"),
    ("empty image batch", call(image_features=np.zeros((0, 16, 16, 3))), ValueError, "empty"),
    ("nothing", call(), ValueError, "at least one"),
    ("text dict", call(text_inputs={"a": 1}), TypeError, "text_inputs must be a str or a list"),
    ("text bytes", call(text_inputs=b"a cat"), TypeError, "text_inputs is bytes; decode it"),
    ("text int", call(text_inputs=3), TypeError, "list of str; got int"),
    ("one text bytes", call(text_inputs=["a", b"b"]), TypeError, "text_inputs[1] is bytes"),
    ("one text None", call(text_inputs=["a", None]), ValueError, "example 1 has no modality"),
    (
        "NaN pixel",
        call(image_features=spoiled(IMAGE, np.nan)),
        ValueError,
        "image_features: image has non-finite",
    ),
    (
        "NaN pixel in a batch",
        call(image_features=np.stack([IMAGE, spoiled(IMAGE, np.nan)])),
        ValueError,
        "image_features[1]: image has non-finite",
    ),
    (
        "inf pixel",
        call(image_features=spoiled(IMAGE, -np.inf)),
        ValueError,
        "image has non-finite pixels",
    ),
    (
        "zero-height image",
        call(image_features=IMAGE[:0]),
        ValueError,
        "image_features: image has zero height or width",
    ),
    (
        "undecodable image bytes",
        call(image_features=b"GIF89a-no"),
        ValueError,
        "image_features: cannot identify",
    ),
    (
        "NaN audio",
        call(audio_inputs=spoiled(AUDIO, np.nan)),
        ValueError,
        "audio_inputs has non-finite",
    ),
    (
        "inf audio in a batch",
        call(audio_inputs=np.stack([AUDIO, spoiled(AUDIO, np.inf)])),
        ValueError,
        "audio_inputs[1] has non-finite",
    ),
    (
        "too many channels",
        call(audio_inputs=np.zeros((2, 16000, 9), np.float32)),
        ValueError,
        "at most 8 channels",
    ),
    (
        "sample rate str",
        call(audio_inputs=AUDIO, audio_sample_rate="16k"),
        TypeError,
        "audio_sample_rate must be a positive int (Hz); got str '16k'",
    ),
    (
        "sample rate zero",
        call(audio_inputs=AUDIO, audio_sample_rate=0),
        ValueError,
        "audio_sample_rate must be a positive",
    ),
    (
        "sample rate fraction",
        call(audio_inputs=AUDIO, audio_sample_rate=22050.5),
        ValueError,
        "audio_sample_rate must be a positive whole number",
    ),
    (
        "batch sizes differ",
        call(text_inputs=["a", "b"], image_features=np.stack([IMAGE] * 3)),
        ValueError,
        "disagree on batch size",
    ),
    # Batches given to the module directly.
    ("id past vocab", apply({"text": TEXT * 300}), ValueError, "text token ids"),
    ("negative id", apply({"text": -TEXT}), ValueError, "text token ids"),
    ("float ids", apply({"text": TEXT.astype(np.float32)}), TypeError, "integer token ids"),
    ("empty batch", apply({"text": TEXT[:0]}), ValueError, "empty"),
    ("mask shape", apply({"text": TEXT, "text_mask": TEXT[:, :3] > 0}), ValueError, "text_mask"),
    (
        "batch sizes differ (module)",
        apply({"text": TEXT, "audio": np.zeros((3, 16000), np.float32)}),
        ValueError,
        "disagree on batch size",
    ),
    ("no modality", apply({"label": np.zeros(2, np.int32)}), ValueError, "none of the model"),
    (
        "NaN image (module)",
        apply({"image": np.stack([IMAGE, spoiled(IMAGE, np.nan)])}),
        ValueError,
        "image[1] has non-finite values",
    ),
    (
        "inf audio (module)",
        apply({"audio": spoiled(AUDIO, np.inf)[None]}),
        ValueError,
        "audio[0] has non-finite values",
    ),
]


@pytest.mark.parametrize("what,run,error,named", BAD_INPUTS, ids=[row[0] for row in BAD_INPUTS])
def test_bad_input_gets_a_clear_error(what, run, error, named):
    with pytest.raises(error, match=re.escape(named)):
        run()
