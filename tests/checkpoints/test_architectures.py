"""The importer derives the full-size configs of real published architectures from their
parameter names and shapes alone (tests/checkpoints/fixtures/architectures.json, recorded
from the peer libraries' own model classes on torch's meta device; no weights), and the
mmtx model of that config has exactly those shapes (checked with jax.eval_shape)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from mmtx.checkpoints.importer import convert_tensors

ARCHITECTURES = os.path.join(os.path.dirname(__file__), "fixtures", "architectures.json")

# name -> (family, {config path: value}) of the published model.
EXPECTED = {
    "open_clip/ViT-B-32": (
        "open_clip",
        {
            "model.embed_dim": 512,
            "model.image.image_size": 224,
            "model.image.patch_size": 32,
            "model.image.width": 768,
            "model.image.depth": 12,
            "model.image.num_heads": 12,
            "model.image.mlp_dim": 3072,
            "model.text.vocab_size": 49408,
            "model.text.max_length": 77,
            "model.text.width": 512,
            "model.text.depth": 12,
            "model.text.num_heads": 8,
            "model.text.pooling": "eot",
            "model.text.causal": True,
        },
    ),
    "open_clip/ViT-B-16": (
        "open_clip",
        {"model.image.patch_size": 16, "model.image.image_size": 224, "model.image.depth": 12},
    ),
    "hf_clip/clip-vit-base-patch32": (
        "hf_clip",
        {
            "model.embed_dim": 512,
            "model.image.patch_size": 32,
            "model.image.image_size": 224,
            "model.image.num_heads": 12,
            "model.text.num_heads": 8,
            "model.text.vocab_size": 49408,
            "model.image.activation": "quick_gelu",
        },
    ),
    "hf_siglip/siglip-base-patch16-224": (
        "hf_siglip",
        {
            "model.embed_dim": 768,
            "model.image.patch_size": 16,
            "model.image.image_size": 224,
            "model.image.pooling": "map",
            "model.image.num_heads": 12,
            "model.text.vocab_size": 32000,
            "model.text.max_length": 64,
            "model.text.pooling": "last",
            "loss.contrastive": "sigmoid",
        },
    ),
    "big_vision_siglip/siglip-b16-224": (
        "big_vision_siglip",
        {
            "model.embed_dim": 768,
            "model.image.patch_size": 16,
            "model.image.image_size": 224,
            "model.image.num_heads": 12,
            "model.image.depth": 12,
            "model.text.vocab_size": 32000,
            "model.text.max_length": 64,
            "model.text.num_heads": 12,
        },
    ),
    "hf_ast/ast-base": (
        "hf_ast",
        {
            "model.embed_dim": 768,
            "model.audio.num_mel_bins": 128,
            "model.audio.num_samples": 400 + 1023 * 160,
            "model.audio.patch_size": (16, 16),
            "model.audio.patch_stride": (10, 10),
            "model.audio.depth": 12,
            "model.audio.num_heads": 12,
            "model.audio.pooling": "cls_distill",
        },
    ),
    "hf_ast/ast-finetuned-audioset-10-10-0.4593": (
        "hf_ast",
        {"model.audio.width": 768, "model.audio.depth": 12, "model.audio.frontend": "kaldi_fbank"},
    ),
}


def load_architectures() -> dict:
    with open(ARCHITECTURES) as f:
        return json.load(f)


def test_every_recorded_architecture_is_checked():
    assert sorted(k for k in load_architectures() if k != "versions") == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_full_size_config_from_names_and_shapes(name):
    family, expected = EXPECTED[name]
    recorded = load_architectures()[name]
    # np.zeros costs no memory until written: the conversion sees real names and shapes.
    tensors = {key: np.zeros(shape, np.float32) for key, shape in recorded["params"].items()}
    hf_config = recorded["config"] if family.startswith("hf_") else None
    imported = convert_tensors(family, tensors, hf_config=hf_config)  # eval_shape-checked
    config = imported.config
    for path, value in expected.items():
        node = config
        for part in path.split("."):
            node = node[part]
        assert node == value, f"{name}: config.{path} = {node!r}, expected {value!r}"
