"""Tests for mmtx/checkpoints/preprocess_config.py: a checkpoint's preprocessing files as mmtx
config values, each with its source, and a line for what mmtx does not reproduce."""

from __future__ import annotations

import pytest

from mmtx.checkpoints import CheckpointImportError
from mmtx.checkpoints.preprocess_config import Facts, hf_audio, hf_image, open_clip_image

CLIP_PROCESSOR = {
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "rescale_factor": 1 / 255,
    "size": {"shortest_edge": 256},
}


def test_facts_nest_as_config_overrides():
    facts = Facts()
    facts.set("model.image.resize", "squash", "here")
    facts.set("model.audio.sample_rate", 8000, "there")
    assert facts.overrides() == {
        "model": {"image": {"resize": "squash"}, "audio": {"sample_rate": 8000}}
    }
    assert facts.sources == {"model.image.resize": "here", "model.audio.sample_rate": "there"}


def test_clip_processor_resizes_the_shorter_side_then_crops():
    facts = hf_image(CLIP_PROCESSOR, image_size=224, family="hf_clip", square=False)
    assert facts.values == {
        "model.image.interpolation": "bicubic",
        "model.image.resize": "shorter_side",
        "model.image.crop_offset": "floor",  # HF's center_crop, not torchvision's round
        "model.image.resize_size": 256,
        "model.image.mean": tuple(CLIP_PROCESSOR["image_mean"]),
        "model.image.std": tuple(CLIP_PROCESSOR["image_std"]),
    }
    assert facts.sources["model.image.interpolation"] == "preprocessor_config.json resample=3"
    assert facts.differences == [] and facts.assumed == []
    # The shortest edge equal to the crop is stored as 0 (= image_size, at any --image_size).
    same = {**CLIP_PROCESSOR, "size": {"shortest_edge": 224}}
    assert (
        hf_image(same, image_size=224, family="hf_clip", square=False).values[
            "model.image.resize_size"
        ]
        == 0
    )


def test_siglip_processor_squashes_and_old_bare_sizes_read_by_family():
    siglip = {"resample": 2, "size": {"height": 224, "width": 224}, "image_mean": [0.5] * 3}
    facts = hf_image(siglip, image_size=224, family="hf_siglip", square=True)
    assert facts.values["model.image.resize"] == "squash"
    assert facts.values["model.image.interpolation"] == "bilinear"
    bare = {"size": 224}
    assert (
        hf_image(bare, image_size=224, family="hf_siglip", square=True).values["model.image.resize"]
        == "squash"
    )
    assert (
        hf_image(bare, image_size=224, family="hf_clip", square=False).values["model.image.resize"]
        == "shorter_side"
    )


def test_what_mmtx_cannot_do_is_a_difference_line():
    odd = {
        **CLIP_PROCESSOR,
        "resample": 1,  # lanczos
        "crop_size": {"height": 200, "width": 200},
        "do_normalize": False,
        "rescale_factor": 1.0,
    }
    facts = hf_image(odd, image_size=224, family="hf_clip", square=False)
    assert [line.split(":")[0] for line in facts.differences] == [
        "image interpolation",
        "image crop",
        "pixel scale",
    ]
    assert facts.values["model.image.mean"] == (0.0, 0.0, 0.0)
    assert facts.values["model.image.std"] == (1.0, 1.0, 1.0)
    with pytest.raises(CheckpointImportError, match="shortest_edge 200 is smaller"):
        hf_image(
            {**CLIP_PROCESSOR, "size": {"shortest_edge": 200}},
            image_size=224,
            family="hf_clip",
            square=False,
        )


def test_no_processor_file_uses_the_family_defaults_and_says_so():
    facts = hf_image(None, image_size=224, family="hf_siglip", square=True)
    (note,) = facts.assumed
    assert note.startswith("image preprocessing: hf_siglip's defaults (bicubic, squash")
    assert facts.values["model.image.resize"] == "squash"


def test_open_clip_preprocess_cfg():
    facts = open_clip_image({"interpolation": "bilinear", "resize_mode": "squash"}, image_size=32)
    assert facts.values["model.image.interpolation"] == "bilinear"
    assert facts.values["model.image.resize"] == "squash"
    default = open_clip_image(None, image_size=32)
    assert default.values["model.image.interpolation"] == "bicubic"
    assert default.sources["model.image.resize"].startswith("default: open_clip's")
    odd = open_clip_image({"interpolation": "random"}, image_size=32)
    assert odd.differences[0].startswith("image interpolation: open_clip's is 'random'")


def test_ast_feature_extractor_statistics_and_rate():
    facts = hf_audio(
        {"sampling_rate": 22050, "mean": -6.85, "std": 5.57, "num_mel_bins": 128},
        num_mel_bins=128,
        max_length=100,
    )
    assert facts.values["model.audio.log_mel_mean"] == -6.85
    assert facts.values["model.audio.log_mel_std"] == 2 * 5.57
    # Kaldi frames: 25 ms windows every 10 ms at the file's rate.
    assert facts.values["model.audio.window_length"] == 551
    assert facts.values["model.audio.hop_length"] == 220
    assert facts.values["model.audio.num_samples"] == 551 + 99 * 220
    plain = hf_audio({"do_normalize": False}, num_mel_bins=128, max_length=100)
    assert (plain.values["model.audio.log_mel_mean"], plain.values["model.audio.log_mel_std"]) == (
        0.0,
        1.0,
    )
    with pytest.raises(CheckpointImportError, match="says max_length = 1024, but config"):
        hf_audio({"max_length": 1024}, num_mel_bins=128, max_length=100)
