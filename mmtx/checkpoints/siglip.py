"""SigLIP (Zhai et al. 2023) checkpoints: HF ``SiglipModel`` files and big_vision ``.npz``.

SigLIP's image tower is a ViT without a class token, pooled by multi-head attention with a
learned probe (MAP head), and its embedding is that pooled output (no projection); its text
tower is a bidirectional transformer that attends to padding too and is pooled at the last
position, then projected by a dense layer with bias. Both use tanh-GELU and LayerNorm
epsilon 1e-6, images normalised to [-1, 1], and a sigmoid loss with a learned bias.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from mmtx.checkpoints import layout, preprocess_config
from mmtx.checkpoints.clip import (
    HF_CLIP_BLOCK,
    _grid_side,
    _hf_activation,
    hf_text_tower,
    hf_tower_facts,
)
from mmtx.checkpoints.family import Converted, two_tower_overrides
from mmtx.checkpoints.preprocess_config import Facts
from mmtx.checkpoints.tensors import CheckpointImportError, Missing, TensorSource


def _siglip_overrides(
    *,
    text: dict[str, Any],
    image: dict[str, Any],
    embed_dim: int,
    activation: str,
    norm_eps: float,
) -> dict[str, Any]:
    tower = {"activation": activation, "norm_eps": norm_eps, "position_embedding": "learned"}
    return two_tower_overrides(
        embed_dim=embed_dim,
        contrastive="sigmoid",
        text={**tower, "causal": False, "pooling": "last", "projection": "dense", **text},
        image={
            **tower,
            "pooling": "map",
            "patch_bias": True,
            "class_token_posemb": False,
            "projection": "none",
            "mean": (0.5, 0.5, 0.5),
            "std": (0.5, 0.5, 0.5),
            **image,
        },
    )


def convert_hf_siglip(
    source: TensorSource,
    hf_config: dict[str, Any] | None,
    preprocessor: dict[str, Any] | None,
    num_heads: Mapping[str, int],
) -> Converted:
    """HF transformers ``SiglipModel`` (``vision_model.head.probe``,
    ``text_model.head.weight``, ``logit_bias``, ...) -> mmtx. Heads, activation and
    LayerNorm epsilon come from its ``config.json``; the image preprocessing (bicubic
    squash to the image size, mean/std) from ``preprocessor``, its
    ``preprocessor_config.json``."""
    del num_heads  # read from the config / the tensors' shapes
    if hf_config is None:
        raise CheckpointImportError(
            "hf_siglip needs the model's config.json (heads, activation); put it next to the "
            "weights file or pass --hf_config"
        )
    text_cfg, vision_cfg = hf_config.get("text_config", {}), hf_config.get("vision_config", {})
    source.ignore(["text_model.embeddings.position_ids", "vision_model.embeddings.position_ids"])
    text, vision = "text_model.", "vision_model."
    vocab_size, text_width = source.shape(f"{text}embeddings.token_embedding.weight")
    context_length = source.shape(f"{text}embeddings.position_embedding.weight")[0]
    embed_dim = source.shape(f"{text}head.weight")[0]
    image_width, _, patch_size, _ = source.shape(f"{vision}embeddings.patch_embedding.weight")
    positions = source.shape(f"{vision}embeddings.position_embedding.weight")[0]
    grid = _grid_side(positions, 0, f"{vision}embeddings.position_embedding.weight")
    if embed_dim != image_width:
        raise CheckpointImportError(
            f"hf_siglip: the text head projects to {embed_dim} but the image embedding (the MAP "
            f"head's output) has width {image_width}; mmtx needs them equal"
        )
    text_depth = layout.count_layers(source, f"{text}encoder.layers.{{}}.layer_norm1.weight")
    image_depth = layout.count_layers(source, f"{vision}encoder.layers.{{}}.layer_norm1.weight")
    text_heads = int(text_cfg.get("num_attention_heads", 12))
    image_heads = int(vision_cfg.get("num_attention_heads", 12))
    overrides = _siglip_overrides(
        embed_dim=embed_dim,
        activation=_hf_activation(vision_cfg.get("hidden_act", "gelu_pytorch_tanh")),
        norm_eps=float(vision_cfg.get("layer_norm_eps", 1e-6)),
        text={
            "vocab_size": vocab_size,
            "max_length": context_length,
            "width": text_width,
            "depth": text_depth,
            "num_heads": text_heads,
            "mlp_dim": source.shape(f"{text}encoder.layers.0.mlp.fc1.weight")[0],
        },
        image={
            "image_size": grid * patch_size,
            "patch_size": patch_size,
            "width": image_width,
            "depth": image_depth,
            "num_heads": image_heads,
            "mlp_dim": source.shape(f"{vision}encoder.layers.0.mlp.fc1.weight")[0],
        },
    )

    head = f"{vision}head."
    params = {
        "text": hf_text_tower(source, text_depth, text_heads, final_norm="final_layer_norm"),
        "image": {
            "patches": {
                "projection": {
                    "kernel": layout.conv_kernel(
                        source[f"{vision}embeddings.patch_embedding.weight"]
                    ),
                    "bias": source[f"{vision}embeddings.patch_embedding.bias"],
                }
            },
            "posemb": {"embedding": source[f"{vision}embeddings.position_embedding.weight"]},
            "tower": {
                "encoder": {
                    "blocks": layout.torch_blocks(
                        source, f"{vision}encoder.layers.", image_depth, HF_CLIP_BLOCK, image_heads
                    ),
                    "norm": layout.layer_norm(source, f"{vision}post_layernorm"),
                },
                "map_head": {
                    "probe": source[f"{head}probe"],
                    "attention": layout.attention(
                        source,
                        num_heads=image_heads,
                        packed=f"{head}attention.",
                        out=f"{head}attention.out_proj",
                    ),
                    "norm": layout.layer_norm(source, f"{head}layernorm"),
                    "mlp": {
                        "fc1": layout.dense(source, f"{head}mlp.fc1"),
                        "fc2": layout.dense(source, f"{head}mlp.fc2"),
                    },
                },
            },
        },
        "text_head": layout.dense(source, f"{text}head"),
        "logit_scale": layout.reshaped(source["logit_scale"], ()),
        "logit_bias": layout.reshaped(source["logit_bias"], ()),
    }
    facts = hf_tower_facts(hf_config, ("text", "text_config"), ("image", "vision_config"))
    facts.update(
        preprocess_config.hf_image(
            preprocessor, image_size=grid * patch_size, family="hf_siglip", square=True
        )
    )
    return Converted(overrides, params, grids={"image": (grid, grid)}, facts=facts)


# ------------------------------------------------------------------------------ big_vision


def _strip_params_prefix(source: TensorSource) -> str:
    """big_vision exports name tensors ``params/img/...`` (or ``img/...``): the prefix used."""
    return "params/" if any(name.startswith("params/") for name in source.tensors) else ""


def _flax_dense(source: TensorSource, prefix: str) -> dict[str, Any]:
    return {"kernel": source[f"{prefix}/kernel"], "bias": source[f"{prefix}/bias"]}


def _flax_norm(source: TensorSource, prefix: str) -> dict[str, Any]:
    return {"scale": source[f"{prefix}/scale"], "bias": source[f"{prefix}/bias"]}


def _flax_attention(source: TensorSource, prefix: str) -> dict[str, Any]:
    return {
        part: _flax_dense(source, f"{prefix}/{part}") for part in ("query", "key", "value", "out")
    }


def _flax_block(source: TensorSource, prefix: str) -> dict[str, Any]:
    """A big_vision ``encoderblock`` (already flax: kernels ``[D, H, Dh]``) -> mmtx block."""
    return {
        "norm1": _flax_norm(source, f"{prefix}/LayerNorm_0"),
        "attention": _flax_attention(source, f"{prefix}/MultiHeadDotProductAttention_0"),
        "norm2": _flax_norm(source, f"{prefix}/LayerNorm_1"),
        "mlp": {
            "fc1": _flax_dense(source, f"{prefix}/MlpBlock_0/Dense_0"),
            "fc2": _flax_dense(source, f"{prefix}/MlpBlock_0/Dense_1"),
        },
    }


def _flax_blocks(source: TensorSource, encoder: str) -> tuple[Any, int]:
    """The blocks of a big_vision ``Transformer``/``Encoder``: ``encoderblock_<i>/...`` per
    layer, or one ``encoderblock/...`` with a leading layer axis (``scan=True`` exports)."""
    if f"{encoder}/encoderblock/LayerNorm_0/scale" in source:
        depth = source.shape(f"{encoder}/encoderblock/LayerNorm_0/scale")[0]
        return _flax_block(source, f"{encoder}/encoderblock"), depth
    depth = layout.count_layers(source, f"{encoder}/encoderblock_{{}}/LayerNorm_0/scale")
    blocks = [_flax_block(source, f"{encoder}/encoderblock_{i}") for i in range(depth)]
    return layout.stack_layers(blocks), depth


def _scalar(x: Any) -> Any:
    return x if isinstance(x, Missing) else np.asarray(x, np.float32).reshape(())


def convert_big_vision_siglip(
    source: TensorSource,
    hf_config: dict[str, Any] | None,
    preprocessor: dict[str, Any] | None,
    num_heads: Mapping[str, int],
) -> Converted:
    """A big_vision SigLIP ``.npz`` (``img/embedding/kernel``, ``img/MAPHead_0/probe``,
    ``txt/Encoder_0/encoderblock_0/...``, ``t``, ``b``) -> mmtx. Everything, heads included,
    is read from the tensors' shapes: big_vision stores attention per head. Its eval
    preprocessing (``resize(size)|value_range(-1, 1)``) squashes bilinearly."""
    del num_heads, hf_config, preprocessor  # read from the tensors' shapes
    p = _strip_params_prefix(source)
    img, txt = f"{p}img", f"{p}txt"
    patch_size, _, _, image_width = source.shape(f"{img}/embedding/kernel")
    positions = source.shape(f"{img}/pos_embedding")[-2]
    grid = _grid_side(positions, 0, f"{img}/pos_embedding")
    vocab_size, text_width = source.shape(f"{txt}/Embed_0/embedding")
    context_length = source.shape(f"{txt}/pos_embedding")[-2]
    image_blocks, image_depth = _flax_blocks(source, f"{img}/Transformer")
    text_blocks, text_depth = _flax_blocks(source, f"{txt}/Encoder_0")
    query = "MultiHeadDotProductAttention_0/query/kernel"
    image_heads = _heads(source, f"{img}/Transformer", query)
    text_heads = _heads(source, f"{txt}/Encoder_0", query)
    mlp = "MlpBlock_0/Dense_0/kernel"
    image_mlp = _block_shape(source, f"{img}/Transformer", mlp)[-1]
    text_mlp = _block_shape(source, f"{txt}/Encoder_0", mlp)[-1]
    embed_dim = source.shape(f"{txt}/head/kernel")[-1]
    has_image_head = f"{img}/head/kernel" in source
    if not has_image_head and embed_dim != image_width:
        raise CheckpointImportError(
            f"big_vision_siglip: the text head projects to {embed_dim} but the image embedding "
            f"has width {image_width} and there is no img/head to project it"
        )
    overrides = _siglip_overrides(
        embed_dim=embed_dim,
        activation="gelu_tanh",
        norm_eps=1e-6,
        text={
            "vocab_size": vocab_size,
            "max_length": context_length,
            "width": text_width,
            "depth": text_depth,
            "num_heads": text_heads,
            "mlp_dim": text_mlp,
        },
        image={
            "image_size": grid * patch_size,
            "patch_size": patch_size,
            "width": image_width,
            "depth": image_depth,
            "num_heads": image_heads,
            "mlp_dim": image_mlp,
            "projection": "dense" if has_image_head else "none",
        },
    )
    map_head = f"{img}/MAPHead_0"
    params = {
        "text": {
            "token_embed": {"embedding": {"embedding": source[f"{txt}/Embed_0/embedding"]}},
            "posemb": {
                "embedding": layout.reshaped(
                    source[f"{txt}/pos_embedding"], (context_length, text_width)
                )
            },
            "tower": {
                "encoder": {
                    "blocks": text_blocks,
                    "norm": _flax_norm(source, f"{txt}/Encoder_0/encoder_norm"),
                },
            },
        },
        "image": {
            "patches": {"projection": _flax_dense(source, f"{img}/embedding")},
            "posemb": {
                "embedding": layout.reshaped(
                    source[f"{img}/pos_embedding"], (positions, image_width)
                )
            },
            "tower": {
                "encoder": {
                    "blocks": image_blocks,
                    "norm": _flax_norm(source, f"{img}/Transformer/encoder_norm"),
                },
                "map_head": {
                    "probe": source[f"{map_head}/probe"],
                    "attention": _flax_attention(
                        source, f"{map_head}/MultiHeadDotProductAttention_0"
                    ),
                    "norm": _flax_norm(source, f"{map_head}/LayerNorm_0"),
                    "mlp": {
                        "fc1": _flax_dense(source, f"{map_head}/MlpBlock_0/Dense_0"),
                        "fc2": _flax_dense(source, f"{map_head}/MlpBlock_0/Dense_1"),
                    },
                },
            },
        },
        "text_head": _flax_dense(source, f"{txt}/head"),
        "logit_scale": _scalar(source[f"{p}t"]),
        "logit_bias": _scalar(source[f"{p}b"]),
    }
    if has_image_head:
        params["image_head"] = _flax_dense(source, f"{img}/head")
    facts = Facts()
    pp = "big_vision's eval preprocessing resize(size)"
    facts.set("model.image.resize", "squash", pp)
    facts.set("model.image.interpolation", "bilinear", pp)
    facts.set("model.image.resize_size", 0, pp)
    facts.differences.append(
        "image resizing: big_vision resizes with tf.image.resize (bilinear, no antialiasing); "
        "mmtx with PIL's bilinear filter, which antialiases when shrinking"
    )
    return Converted(overrides, params, grids={"image": (grid, grid)}, facts=facts)


def _block_shape(source: TensorSource, encoder: str, name: str) -> tuple[int, ...]:
    scanned = f"{encoder}/encoderblock/{name}"
    return source.shape(scanned if scanned in source else f"{encoder}/encoderblock_0/{name}")


def _heads(source: TensorSource, encoder: str, query_kernel: str) -> int:
    shape = _block_shape(source, encoder, query_kernel)
    if len(shape) < 3:
        raise CheckpointImportError(
            f"{encoder}: attention kernel of shape {shape} is not per head ([D, heads, head_dim])"
        )
    return int(shape[-2])
