"""Each family imported into mmtx equals the original: the peer library's embeddings of the
same inputs (tests/checkpoints/fixtures, made by benchmarks/peers/make_import_fixtures.py
with torch, open_clip, transformers, timm) to float32 round-off."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from mmtx.checkpoints import CheckpointImportError, import_checkpoint

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


# The fixture model's open_clip config (fixtures/README.md): what a model hub stores beside
# the weights as open_clip_config.json.
OPEN_CLIP_MODEL_CFG = {
    "embed_dim": 48,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 500, "width": 32, "heads": 2, "layers": 2},
}
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def open_clip_dir(tmp_path, config):
    """The fixture's weights with ``config`` beside them as open_clip_config.json."""
    os.symlink(fixture("open_clip", "model.safetensors"), tmp_path / "model.safetensors")
    (tmp_path / "open_clip_config.json").write_text(json.dumps(config))
    return str(tmp_path / "model.safetensors")


@pytest.mark.parametrize("wrapped", [True, False], ids=["hub_file", "bare_model_config"])
def test_open_clip_reads_heads_and_activation_from_its_config(tmp_path, wrapped):
    """No num_heads given: the heads (vision head_width 32, not 64) come from the file, and the
    import equals open_clip; nothing is assumed."""
    config = (
        {
            "model_cfg": OPEN_CLIP_MODEL_CFG,
            "preprocess_cfg": {"mean": OPENAI_MEAN, "std": OPENAI_STD},
        }
        if wrapped
        else OPEN_CLIP_MODEL_CFG
    )
    imported = import_checkpoint("open_clip", open_clip_dir(tmp_path, config))
    assert [note.split(":")[0] for note in imported.source["assumed"]] == ["tokenizer"]
    assert imported.config.model.image.num_heads == 2 and imported.config.model.text.num_heads == 2
    ref = reference("open_clip")
    out = run(imported.model(), text=ref["text"], image=ref["image"])
    assert_close(out["text"], ref["text_embeds"])
    assert_close(out["image"], ref["image_embeds"])


def test_open_clip_config_gives_exact_gelu_and_the_normalisation(tmp_path):
    config = {
        "model_cfg": {**OPEN_CLIP_MODEL_CFG, "quick_gelu": False},
        "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
    }
    imported = import_checkpoint("open_clip", open_clip_dir(tmp_path, config))
    assert imported.config.model.text.activation == "gelu"
    assert imported.config.model.image.activation == "gelu"
    assert tuple(imported.config.model.image.mean) == (0.5, 0.5, 0.5)
    assert tuple(imported.config.model.image.std) == (0.25, 0.25, 0.25)
    # The config's resizing is taken: bicubic (open_clip's default), shorter side + crop.
    image = imported.config.model.image
    assert (image.interpolation, image.resize, image.resize_size) == ("bicubic", "shorter_side", 0)
    assert imported.source["differences"] == []
    values = imported.source["values"]
    assert values["model.image.interpolation"]["from"].startswith("default: open_clip's")
    assert values["model.text.activation"]["from"] == "open_clip_config.json quick_gelu"
    squash = {**config, "preprocess_cfg": {"interpolation": "bilinear", "resize_mode": "squash"}}
    (tmp_path / "open_clip_config.json").write_text(json.dumps(squash))
    again = import_checkpoint("open_clip", str(tmp_path / "model.safetensors"))
    image = again.config.model.image
    assert (image.interpolation, image.resize) == ("bilinear", "squash")
    assert again.source["values"]["model.image.resize"]["from"] == (
        "open_clip_config.json preprocess_cfg.resize_mode"
    )
    longest = {**config, "preprocess_cfg": {"resize_mode": "longest"}}
    (tmp_path / "open_clip_config.json").write_text(json.dumps(longest))
    (difference,) = import_checkpoint("open_clip", str(tmp_path / "model.safetensors")).source[
        "differences"
    ]
    assert difference.startswith("image resizing: open_clip's resize_mode is 'longest'")
    ref = reference("open_clip")  # made with QuickGELU: exact GELU must change the numbers
    out = run(imported.model(), text=ref["text"])
    assert np.abs(out["text"] - ref["text_embeds"]).max() > 1e-3


def test_open_clip_config_that_disagrees_with_the_weights_is_an_error(tmp_path):
    text_cfg = {**OPEN_CLIP_MODEL_CFG["text_cfg"], "context_length": 77}
    config = {"model_cfg": {**OPEN_CLIP_MODEL_CFG, "text_cfg": text_cfg}}
    with pytest.raises(CheckpointImportError, match=re.escape(
        "open_clip_config.json says text_cfg.context_length = 77, but the weights have 16"
    )):  # fmt: skip
        import_checkpoint("open_clip", open_clip_dir(tmp_path, config))


def test_open_clip_without_a_config_says_what_it_assumed():
    path = fixture("open_clip", "model.safetensors")
    assumed = import_checkpoint("open_clip", path).source["assumed"]
    assert [note.split(":")[0] for note in assumed] == [
        "text heads",
        "image heads",
        "activation",
        "tokenizer",
    ]
    assert "width // 64" in assumed[0] and "quick_gelu" in assumed[2]
    given = import_checkpoint(
        "open_clip", path, num_heads={"text": 2, "image": 2}, activation="quick_gelu"
    )
    assert [note.split(":")[0] for note in given.source["assumed"]] == ["tokenizer"]
    values = given.source["values"]
    assert values["model.text.num_heads"] == {"value": 2, "from": "--num_heads"}
    assert values["model.image.activation"] == {"value": "quick_gelu", "from": "--activation"}


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


def test_hf_siglip():
    ref = reference("hf_siglip")
    imported = import_checkpoint("hf_siglip", fixture("hf_siglip", "model.safetensors"))
    # SigLIP attends to its padding (no mask) and pools the last position.
    text = ref["input_ids"]
    out = run(imported.model(), text=text, text_mask=np.ones(text.shape, bool), image=ref["image"])
    assert_close(out["text"], ref["text_embeds"])
    assert_close(out["image"], ref["image_embeds"])
    assert float(out["logit_scale"]) == float(ref["logit_scale"])
    assert float(out["logit_bias"]) == float(ref["logit_bias"])


@pytest.mark.parametrize(
    "activation,suffix",
    [(None, "_gelu_tanh"), ("gelu", "")],
    ids=["as_big_vision_computes", "as_open_clip_loads_it"],
)
def test_big_vision_siglip(activation, suffix):
    """big_vision computes tanh-GELU (flax's nn.gelu); open_clip's timm/torch model that loads
    the same .npz through open_clip's own loader uses exact GELU: equal to each with that
    activation."""
    ref = reference("big_vision_siglip")
    imported = import_checkpoint(
        "big_vision_siglip", fixture("big_vision_siglip", "siglip.npz"), activation=activation
    )
    text = ref["text"]
    out = run(imported.model(), text=text, text_mask=np.ones(text.shape, bool), image=ref["image"])
    assert_close(out["text"], ref[f"text_embeds{suffix}"])
    assert_close(out["image"], ref[f"image_embeds{suffix}"])
    assert float(out["logit_scale"]) == float(ref["t"])
    assert float(out["logit_bias"]) == float(ref["b"])


def test_hf_ast_from_the_waveform():
    """The waveform through mmtx's Kaldi filterbank and the imported AST equals AST on
    transformers' ASTFeatureExtractor features of the same waveform."""
    ref = reference("hf_ast")
    imported = import_checkpoint("hf_ast", fixture("hf_ast", "model.safetensors"))
    model = imported.model()
    out = run(model, audio=ref["waveform"])
    assert_close(out["audio"], ref["audio_embeds"])
