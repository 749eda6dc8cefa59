"""The image modality's resize fields (mmtx.modalities.image): config, raw inputs, pipeline."""

import json
import re

import numpy as np
import pytest
from helpers import torchvision_eval_reference

from mmtx import config as config_lib
from mmtx.modalities import get_modality
from mmtx.modalities.spec import RESIZE_FIELDS

SIZE = 16


def image_config(**image):
    config = config_lib.default_config()
    config.model.image.update(image_size=SIZE, patch_size=8, **image)
    return config_lib.validate(config)


def photos():
    rng = np.random.default_rng(0)
    # 33 x 47: the longer side truncated (22); 38 x 32: a crop offset of 1.5 rows (round: 2).
    return [rng.integers(0, 256, size=(h, w, 3)).astype(np.uint8) for h, w in [(33, 47), (38, 32)]]


def levels(pixels):
    return np.rint(np.asarray(pixels) * 255).astype(np.uint8)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"interpolation": "bicubic", "resize_size": 20},  # HF CLIP: resize 20, crop 16
        {"resize": "squash", "interpolation": "bicubic"},  # HF SigLIP, open_clip 'squash'
    ],
    ids=["default", "shorter_side_bicubic_20", "squash_bicubic"],
)
def test_from_raw_and_the_pipeline_resize_as_the_config_says(options):
    config = image_config(**options)
    spec = get_modality("image")
    images = photos()
    batch = spec.from_raw(images, config=config, tokenizer=None)["image"]
    assert batch.shape == (2, SIZE, SIZE, 3) and batch.dtype == np.float32
    for pixels, image in zip(batch, images, strict=True):
        np.testing.assert_array_equal(
            levels(pixels), torchvision_eval_reference(image, SIZE, **options)
        )
    example = spec.preprocess_example(
        images[0], config=config, tokenizer=None, rng=None, augment=False, sample_rate=None
    )
    np.testing.assert_array_equal(example["image"], batch[0])


def test_squash_training_augmentation_only_mirrors():
    config = image_config(resize="squash")
    spec = get_modality("image")
    image = photos()[0]
    plain = spec.from_raw([image], config=config, tokenizer=None)["image"][0]
    for seed in range(6):
        out = spec.preprocess_example(
            image,
            config=config,
            tokenizer=None,
            rng=np.random.default_rng(seed),
            augment=True,
            sample_rate=None,
        )["image"]
        assert np.array_equal(out, plain) or np.array_equal(out, plain[:, ::-1])


def test_resize_fields_are_not_the_encoders():
    group = image_config(resize="squash").model.image
    fields = get_modality("image").encoder_fields(group, vocab_size=0)
    assert not set(RESIZE_FIELDS) & set(fields) and fields["image_size"] == SIZE


@pytest.mark.parametrize(
    "options, message",
    [
        ({"resize": "crop"}, "config.model.image.resize: 'crop' is not one of"),
        ({"interpolation": "nearest"}, "config.model.image.interpolation: 'nearest' is not one of"),
        (
            {"resize_size": 12},
            "config.model.image.resize_size: the shorter side before the centre crop to "
            "image_size must be 0 (= image_size) or >= image_size (16); got 12",
        ),
        (
            {"resize": "squash", "resize_size": 20},
            "config.model.image.resize_size: applies to resize='shorter_side' only",
        ),
        ({"resize_size": -1}, "config.model.image.resize_size: must be >= 0; got -1"),
        ({"crop_offset": "ceil"}, "config.model.image.crop_offset: 'ceil' is not one of"),
    ],
)
def test_validate_refuses_resize_options_not_allowed(options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        image_config(**options)


def test_an_older_config_json_without_the_resize_fields_loads_with_the_defaults(tmp_path):
    saved = json.loads(json.dumps(config_lib.default_config().to_dict(), default=list))
    for group in ("image", "video"):
        for name in RESIZE_FIELDS:
            del saved["model"][group][name]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(saved))
    loaded = config_lib.load_config(str(path))
    # as Model.from_checkpoint and the evaluate command read a workdir's config.json
    merged = config_lib.validate(config_lib.merge_overrides(config_lib.default_config(), saved))
    for config in (loaded, merged):
        image = config.model.image
        assert (image.resize, image.interpolation, image.resize_size) == (
            "shorter_side",
            "bilinear",
            0,
        )
        assert config.model.video.resize == "shorter_side"
