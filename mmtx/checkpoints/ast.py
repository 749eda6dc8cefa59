"""AST (Gong et al. 2021) checkpoints: HF transformers ``ASTModel`` files.

AST is a ViT over a Kaldi log-mel filterbank: 16x16 patches with a stride of 10 on both
axes (overlapping), a class and a distillation token whose outputs are averaged, exact GELU,
LayerNorm epsilon 1e-12, features normalised as ``(fbank - mean) / (2 * std)``.

HF convolves the spectrogram transposed (``[B, 1, mel, time]``), so its patches are ordered
mel-major; mmtx's audio patches are time-major (``[B, time, mel, 1]``). The kernel's two
spatial axes are swapped and the position rows permuted to match: the same tokens, in
another order, which self-attention does not see (every token attends to all).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from mmtx.checkpoints import layout, preprocess_config
from mmtx.checkpoints.clip import _hf_activation
from mmtx.checkpoints.family import Converted
from mmtx.checkpoints.tensors import CheckpointImportError, Missing, TensorSource

AST_BLOCK = {
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
    "query": "attention.attention.query",
    "key": "attention.attention.key",
    "value": "attention.attention.value",
    "out": "attention.output.dense",
    "fc1": "intermediate.dense",
    "fc2": "output.dense",
}
PREFIX = "audio_spectrogram_transformer."


def _grid(size: int, patch: int, stride: int) -> int:
    return (size - patch) // stride + 1


def convert_hf_ast(
    source: TensorSource,
    hf_config: dict[str, Any] | None,
    preprocessor: dict[str, Any] | None,
    num_heads: Mapping[str, int],
) -> Converted:
    """HF ``ASTModel`` (``embeddings.cls_token``, ``encoder.layer.0.attention.attention.
    query.weight``, ...; also with the ``audio_spectrogram_transformer.`` prefix of a saved
    ``ASTForAudioClassification``, whose ``classifier.*`` head is left out) -> mmtx audio
    tower. Strides, mel bins and frames come from its ``config.json``; the sampling rate and
    the feature statistics from ``preprocessor``, its ``preprocessor_config.json``
    (``ASTFeatureExtractor``; AudioSet's when absent, and said)."""
    del num_heads  # read from the config / the tensors' shapes
    if hf_config is None:
        raise CheckpointImportError(
            "hf_ast needs the model's config.json (strides, mel bins, frames); put it next to "
            "the weights file or pass --hf_config"
        )
    prefix = PREFIX if f"{PREFIX}embeddings.cls_token" in source else ""
    source.ignore([n for n in source.tensors if n.startswith("classifier.")])
    e = f"{prefix}embeddings."
    width, _, patch_f, patch_t = source.shape(f"{e}patch_embeddings.projection.weight")
    num_mel_bins = int(hf_config.get("num_mel_bins", 128))
    max_length = int(hf_config.get("max_length", 1024))
    stride_f = int(hf_config.get("frequency_stride", 10))
    stride_t = int(hf_config.get("time_stride", 10))
    grid_f = _grid(num_mel_bins, patch_f, stride_f)
    grid_t = _grid(max_length, patch_t, stride_t)
    positions = source.shape(f"{e}position_embeddings")[1]
    if positions != 2 + grid_f * grid_t:
        raise CheckpointImportError(
            f"hf_ast: {e}position_embeddings has {positions} rows but config.json's "
            f"{num_mel_bins} mel bins x {max_length} frames with patch ({patch_f}, {patch_t}) "
            f"and strides ({stride_f}, {stride_t}) make 2 + {grid_f} x {grid_t}"
        )
    heads = int(hf_config.get("num_attention_heads", 12))
    depth = layout.count_layers(source, f"{prefix}encoder.layer.{{}}.layernorm_before.weight")
    overrides = {
        "model": {
            "modalities": ("audio",),
            "embed_dim": width,
            "num_classes": 0,
            "audio": {
                "frontend": "kaldi_fbank",
                "num_mel_bins": num_mel_bins,
                "min_frequency": 20.0,  # Kaldi's default low edge, AST's
                "patch_size": (patch_t, patch_f),
                "patch_stride": (stride_t, stride_f),
                "width": width,
                "depth": depth,
                "num_heads": heads,
                "mlp_dim": source.shape(f"{prefix}encoder.layer.0.intermediate.dense.weight")[0],
                "pooling": "cls_distill",
                "position_embedding": "learned",
                "class_token_posemb": True,
                "patch_bias": True,
                "activation": _hf_activation(hf_config.get("hidden_act", "gelu")),
                "norm_eps": float(hf_config.get("layer_norm_eps", 1e-12)),
                "projection": "none",
            },
        },
        "fusion": {"type": "none"},
        "loss": {"contrastive": "none", "classification_weight": 0.0},
    }

    def time_major(table: Any) -> Any:
        if isinstance(table, Missing):
            return table
        table = table.reshape(positions, width)
        patches = table[2:].reshape(grid_f, grid_t, width).transpose(1, 0, 2)
        return np.concatenate([table[:2], patches.reshape(-1, width)])

    kernel = source[f"{e}patch_embeddings.projection.weight"]
    if not isinstance(kernel, Missing):  # [D, 1, mel, time] -> [time, mel, 1, D]
        kernel = np.ascontiguousarray(kernel.transpose(3, 2, 1, 0))
    params = {
        "audio": {
            "patches": {
                "projection": {
                    "kernel": kernel,
                    "bias": source[f"{e}patch_embeddings.projection.bias"],
                }
            },
            "posemb": {"embedding": time_major(source[f"{e}position_embeddings"])},
            "tower": {
                "cls": source[f"{e}cls_token"],
                "distill": source[f"{e}distillation_token"],
                "encoder": {
                    "blocks": layout.torch_blocks(
                        source, f"{prefix}encoder.layer.", depth, AST_BLOCK, heads
                    ),
                    "norm": layout.layer_norm(source, f"{prefix}layernorm"),
                },
            },
        },
    }
    facts = preprocess_config.hf_audio(
        preprocessor, num_mel_bins=num_mel_bins, max_length=max_length
    )
    for ours, theirs in (
        ("num_heads", "num_attention_heads"),
        ("activation", "hidden_act"),
        ("norm_eps", "layer_norm_eps"),
    ):
        facts.sources[f"model.audio.{ours}"] = (
            f"config.json {theirs}"
            if theirs in hf_config
            else f"default: transformers' (no {theirs} in config.json)"
        )
    return Converted(overrides, params, grids={"audio": (grid_t, grid_f)}, facts=facts)
