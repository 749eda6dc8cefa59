"""How close mmtx's imported models are to the originals: the max abs difference between
mmtx's embeddings and the peer library's (tests/checkpoints/fixtures, made with torch by
benchmarks/peers/make_import_fixtures.py), relative to the largest reference value.

    python benchmarks/import_equality.py

Prints one line per family and tower; tests/checkpoints/test_families.py asserts <= 1e-5.
Then, for each model-hub directory of tests/checkpoints/fixtures/hub (made by
benchmarks/peers/make_hub_fixtures.py), imported with the path alone, the max abs difference
of the unit-norm embeddings of *raw* inputs (strings, odd-sized uint8 and PIL images,
waveforms, short clips) from the original's own preprocessing; tests/checkpoints/test_hub.py
asserts <= 1e-5.
"""

from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image

from mmtx.checkpoints import import_checkpoint

FIXTURES = os.path.join(os.path.dirname(__file__), os.pardir, "tests", "checkpoints", "fixtures")
HUB = os.path.join(FIXTURES, "hub")


def _reference(family: str) -> dict[str, np.ndarray]:
    with np.load(os.path.join(FIXTURES, family, "reference.npz")) as data:
        return {name: data[name] for name in data.files}


def _relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def _cases() -> tuple[list[tuple[str, dict, dict, dict[str, str]]], dict[str, dict]]:
    """The measured cases, (family, import kwargs, batch, output -> reference key) each, and
    the references by family."""
    clip, hf_clip = _reference("open_clip"), _reference("hf_clip")
    siglip, big_vision, ast = (
        _reference("hf_siglip"),
        _reference("big_vision_siglip"),
        _reference("hf_ast"),
    )
    heads = {"num_heads": {"image": 2, "text": 2}}  # tiny fixture: head width is not 64
    return [
        (
            "open_clip",
            {"path": "open_clip/model.safetensors", **heads},
            {"text": clip["text"], "text_mask": clip["text"] != 0, "image": clip["image"]},
            {"text": "text_embeds", "image": "image_embeds"},
        ),
        (
            "open_clip",
            {"path": "open_clip/model.safetensors", "image_size": 48, **heads},
            {"image": clip["image_resampled"]},
            {"image": "image_resampled_embeds"},
        ),
        (
            "hf_clip",
            {"path": "hf_clip/model.safetensors"},
            {
                "text": hf_clip["input_ids"],
                "text_mask": hf_clip["attention_mask"].astype(bool),
                "image": hf_clip["image"],
            },
            {"text": "text_embeds", "image": "image_embeds"},
        ),
        (
            "hf_siglip",
            {"path": "hf_siglip/model.safetensors"},
            {
                "text": siglip["input_ids"],
                "text_mask": np.ones(siglip["input_ids"].shape, bool),
                "image": siglip["image"],
            },
            {"text": "text_embeds", "image": "image_embeds"},
        ),
        (
            "big_vision_siglip",
            {"path": "big_vision_siglip/siglip.npz"},
            {
                "text": big_vision["text"],
                "text_mask": np.ones(big_vision["text"].shape, bool),
                "image": big_vision["image"],
            },
            {"text": "text_embeds_gelu_tanh", "image": "image_embeds_gelu_tanh"},
        ),
        (
            "hf_ast",
            {"path": "hf_ast/model.safetensors"},
            {"audio": ast["waveform"]},
            {"audio": "audio_embeds"},
        ),
    ], {
        "open_clip": clip,
        "hf_clip": hf_clip,
        "hf_siglip": siglip,
        "big_vision_siglip": big_vision,
        "hf_ast": ast,
    }


def main() -> None:
    cases, references = _cases()
    for family, kwargs, batch, keys in cases:
        kwargs = dict(kwargs)
        path = os.path.join(FIXTURES, kwargs.pop("path"))
        model = import_checkpoint(family, path, **kwargs).model()
        outputs = model.run(batch)
        for output, key in keys.items():
            error = _relative_error(outputs[output], references[family][key])
            size = f" at {kwargs['image_size']} px" if "image_size" in kwargs else ""
            print(f"{family:18s} {output:6s}{size:10s} max |mmtx - peer| / scale = {error:.1e}")
    hub_raw_inputs()


def _unit_error(got: np.ndarray, want: np.ndarray) -> float:
    got = np.asarray(got) / np.linalg.norm(got, axis=-1, keepdims=True)
    return float(np.max(np.abs(got - want)))


def hub_raw_inputs() -> None:
    """The hub directories on raw inputs (max abs error of unit-norm embeddings)."""
    with open(os.path.join(HUB, "info.json")) as f:
        info = json.load(f)
    for family in ("open_clip", "hf_clip", "hf_siglip", "hf_ast"):
        with np.load(os.path.join(HUB, f"{family}.npz")) as data:
            ref = {name: data[name] for name in data.files}
        model = import_checkpoint(None, os.path.join(HUB, family)).model()
        errors = {}
        if family == "hf_ast":
            short = [ref["short_waveform_0"], ref["short_waveform_1"]]
            errors["waveforms"] = _unit_error(
                model(audio_inputs=list(ref["waveform"]))["audio"], ref["audio_embeds"]
            )
            errors["short clips"] = _unit_error(
                model(audio_inputs=short)["audio"], ref["short_audio_embeds"]
            )
        else:
            images = [ref[f"image_{i}"] for i in range(len(info["image_shapes"]))]
            pil = [Image.fromarray(image) for image in images]
            errors["strings"] = _unit_error(
                model(text_inputs=info["texts"])["text"], ref["text_embeds"]
            )
            errors["uint8 images"] = _unit_error(
                model(image_features=images)["image"], ref["image_embeds"]
            )
            errors["PIL images"] = _unit_error(
                model(image_features=pil)["image"], ref["image_embeds"]
            )
        for what, error in errors.items():
            print(f"hub/{family:14s} {what:13s} max |unit(mmtx) - unit(peer)| = {error:.1e}")


if __name__ == "__main__":
    main()
