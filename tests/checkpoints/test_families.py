"""Each family imported into mmtx equals the original: the peer library's embeddings of the
same inputs (tests/checkpoints/fixtures, made by benchmarks/peers/make_import_fixtures.py
with torch, open_clip, transformers, timm) to float32 round-off."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from mmtx.checkpoints import import_checkpoint

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
# Max abs error allowed, relative to the largest reference value (float32 round-off through
# a few layers: measured errors are ~1e-7 to 1e-6 of the scale).
RELATIVE_TOLERANCE = 1e-5


def fixture(family: str, name: str) -> str:
    return os.path.join(FIXTURES, family, name)


def reference(family: str) -> dict[str, np.ndarray]:
    with np.load(fixture(family, "reference.npz")) as data:
        return {name: data[name] for name in data.files}


def assert_close(got: np.ndarray, want: np.ndarray) -> None:
    scale = float(np.max(np.abs(want)))
    error = float(np.max(np.abs(np.asarray(got) - want)))
    assert got.shape == want.shape
    assert error <= RELATIVE_TOLERANCE * scale, f"max abs error {error:.3g} (scale {scale:.3g})"


def run(model, text=None, image=None, text_mask=None, audio=None) -> dict[str, np.ndarray]:
    batch = {}
    if text is not None:
        batch["text"] = text.astype(np.int32)
        batch["text_mask"] = text != 0 if text_mask is None else text_mask
    if image is not None:
        batch["image"] = image
    if audio is not None:
        batch["audio"] = audio
    return model.run(batch)


def test_open_clip():
    ref = reference("open_clip")
    imported = import_checkpoint(
        "open_clip", fixture("open_clip", "model.safetensors"), num_heads={"image": 2, "text": 2}
    )
    out = run(imported.model(), text=ref["text"], image=ref["image"])
    assert_close(out["text"], ref["text_embeds"])
    assert_close(out["image"], ref["image_embeds"])
    assert float(out["logit_scale"]) == float(ref["logit_scale"])


def test_open_clip_at_another_image_size_resamples_the_position_table():
    ref = reference("open_clip")
    imported = import_checkpoint(
        "open_clip",
        fixture("open_clip", "model.safetensors"),
        num_heads={"image": 2, "text": 2},
        image_size=48,
    )
    assert imported.config.model.image.image_size == 48
    np.testing.assert_allclose(
        imported.params["image"]["posemb"]["embedding"],
        ref["resampled_positional_embedding"],
        atol=1e-6,
    )
    out = run(imported.model(), image=ref["image_resampled"])
    assert_close(out["image"], ref["image_resampled_embeds"])


def test_hf_clip():
    ref = reference("hf_clip")
    imported = import_checkpoint("hf_clip", fixture("hf_clip", "model.safetensors"))
    out = run(
        imported.model(),
        text=ref["input_ids"],
        text_mask=ref["attention_mask"].astype(bool),
        image=ref["image"],
    )
    assert_close(out["text"], ref["text_embeds"])
    assert_close(out["image"], ref["image_embeds"])


def test_hf_config_is_read_next_to_the_weights():
    with open(fixture("hf_clip", "config.json")) as f:
        heads = json.load(f)["vision_config"]["num_attention_heads"]
    imported = import_checkpoint("hf_clip", fixture("hf_clip", "model.safetensors"))
    assert imported.config.model.image.num_heads == heads


@pytest.mark.parametrize("family", ["hf_siglip", "big_vision_siglip", "hf_ast"])
def test_fixture_present(family):
    assert os.path.isdir(os.path.join(FIXTURES, family)), f"{family} fixtures not made yet"
