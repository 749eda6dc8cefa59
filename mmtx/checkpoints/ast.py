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

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from mmtx.checkpoints import hf, layout, preprocess_config
from mmtx.checkpoints.family import Converted
from mmtx.checkpoints.tensors import CheckpointImportError, Missing, Tensor, TensorSource

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
TOKENS = 2  # the class and distillation tokens' rows, before the patches'


def _grid(size: int, patch: int, stride: int) -> int:
    return (size - patch) // stride + 1


@dataclasses.dataclass(frozen=True)
class _Patches:
    """How AST cuts its spectrogram into patches: along frequency (mel bins) and time
    (frames), the patch size, the stride and how many patches fit."""

    num_mel_bins: int
    max_length: int
    patch_f: int
    patch_t: int
    stride_f: int
    stride_t: int
    grid_f: int
    grid_t: int

    @classmethod
    def from_config(cls, hf_config: Mapping[str, Any], patch_f: int, patch_t: int) -> _Patches:
        """The patches of an AST whose patch convolution is ``patch_f x patch_t``, the rest
        from its ``config.json`` (transformers' defaults where it lacks them)."""
        num_mel_bins = int(hf_config.get("num_mel_bins", 128))
        max_length = int(hf_config.get("max_length", 1024))
        stride_f = int(hf_config.get("frequency_stride", 10))
        stride_t = int(hf_config.get("time_stride", 10))
        return cls(
            num_mel_bins=num_mel_bins,
            max_length=max_length,
            patch_f=patch_f,
            patch_t=patch_t,
            stride_f=stride_f,
            stride_t=stride_t,
            grid_f=_grid(num_mel_bins, patch_f, stride_f),
            grid_t=_grid(max_length, patch_t, stride_t),
        )


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
    hf_config = hf.require_config(hf_config, "hf_ast", "strides, mel bins, frames")
    prefix = PREFIX if f"{PREFIX}embeddings.cls_token" in source else ""
    source.ignore([n for n in source.tensors if n.startswith("classifier.")])
    width, _, patch_f, patch_t = source.shape(
        f"{prefix}embeddings.patch_embeddings.projection.weight"
    )
    patches = _Patches.from_config(hf_config, patch_f, patch_t)
    _check_positions(source, f"{prefix}embeddings.position_embeddings", patches)
    heads = int(hf_config.get("num_attention_heads", 12))
    depth = layout.torch_depth(source, f"{prefix}encoder.layer.", AST_BLOCK)
    overrides = _ast_overrides(
        hf_config,
        patches,
        width=width,
        depth=depth,
        num_heads=heads,
        mlp_dim=source.shape(f"{prefix}encoder.layer.0.intermediate.dense.weight")[0],
    )
    params = {"audio": _ast_params(source, prefix, patches, width, depth, heads)}
    facts = preprocess_config.hf_audio(
        preprocessor, num_mel_bins=patches.num_mel_bins, max_length=patches.max_length
    )
    hf.tower_sources(facts, hf_config, "audio")
    grids = {"audio": (patches.grid_t, patches.grid_f)}
    return Converted(overrides, params, grids=grids, facts=facts)


def _check_positions(source: TensorSource, name: str, patches: _Patches) -> None:
    """Raises unless the position table ``name`` has a row per token and patch."""
    positions = source.shape(name)[1]
    if positions != TOKENS + patches.grid_f * patches.grid_t:
        raise CheckpointImportError(
            f"hf_ast: {name} has {positions} rows but config.json's "
            f"{patches.num_mel_bins} mel bins x {patches.max_length} frames with patch "
            f"({patches.patch_f}, {patches.patch_t}) and strides ({patches.stride_f}, "
            f"{patches.stride_t}) make {TOKENS} + {patches.grid_f} x {patches.grid_t}"
        )


def _ast_overrides(
    hf_config: Mapping[str, Any],
    patches: _Patches,
    *,
    width: int,
    depth: int,
    num_heads: int,
    mlp_dim: int,
) -> dict[str, Any]:
    """The config of an AST audio tower of these sizes (nothing else: no fusion, no loss)."""
    return {
        "model": {
            "modalities": ("audio",),
            "embed_dim": width,
            "num_classes": 0,
            "audio": {
                "frontend": "kaldi_fbank",
                "num_mel_bins": patches.num_mel_bins,
                "min_frequency": 20.0,  # Kaldi's default low edge, AST's
                "patch_size": (patches.patch_t, patches.patch_f),
                "patch_stride": (patches.stride_t, patches.stride_f),
                "width": width,
                "depth": depth,
                "num_heads": num_heads,
                "mlp_dim": mlp_dim,
                "pooling": "cls_distill",
                "position_embedding": "learned",
                "class_token_posemb": True,
                "patch_bias": True,
                "activation": hf.activation(hf_config.get("hidden_act", "gelu")),
                "norm_eps": float(hf_config.get("layer_norm_eps", 1e-12)),
                "projection": "none",
            },
        },
        "fusion": {"type": "none"},
        "loss": {"contrastive": "none", "classification_weight": 0.0},
    }


def _ast_params(
    source: TensorSource, prefix: str, patches: _Patches, width: int, depth: int, heads: int
) -> dict[str, Any]:
    """An AST's tensors -> mmtx's ``audio`` params, its patches reordered time-major."""
    e = f"{prefix}embeddings."
    return layout.patch_tower_params(
        {
            "kernel": _time_major_kernel(source[f"{e}patch_embeddings.projection.weight"]),
            "bias": source[f"{e}patch_embeddings.projection.bias"],
        },
        _time_major_positions(source[f"{e}position_embeddings"], patches, width),
        {
            "cls": source[f"{e}cls_token"],
            "distill": source[f"{e}distillation_token"],
            "encoder": layout.torch_encoder(
                source, f"{prefix}encoder.layer.", depth, AST_BLOCK, heads, f"{prefix}layernorm"
            ),
        },
    )


def _time_major_kernel(kernel: Tensor) -> Tensor:
    """HF's patch convolution ``[D, 1, mel, time]`` -> mmtx's ``[time, mel, 1, D]``."""
    if isinstance(kernel, Missing):
        return kernel
    return np.ascontiguousarray(kernel.transpose(3, 2, 1, 0))


def _time_major_positions(table: Tensor, patches: _Patches, width: int) -> Tensor:
    """HF's position table ``[1, 2 + grid_f * grid_t, D]`` (patches mel-major) -> mmtx's
    ``[2 + grid_t * grid_f, D]`` (time-major), the two token rows first as they were."""
    if isinstance(table, Missing):
        return table
    table = table.reshape(TOKENS + patches.grid_f * patches.grid_t, width)
    grid = table[TOKENS:].reshape(patches.grid_f, patches.grid_t, width).transpose(1, 0, 2)
    return np.concatenate([table[:TOKENS], grid.reshape(-1, width)])
