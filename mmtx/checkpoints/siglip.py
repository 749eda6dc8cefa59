"""SigLIP (Zhai et al. 2023) checkpoints: HF ``SiglipModel`` files and big_vision ``.npz``.

SigLIP's image tower is a ViT without a class token, pooled by multi-head attention with a
learned probe (MAP head), and its embedding is that pooled output (no projection); its text
tower is a bidirectional transformer that attends to padding too and is pooled at the last
position, then projected by a dense layer with bias. Both use tanh-GELU and LayerNorm
epsilon 1e-6, images normalised to [-1, 1], and a sigmoid loss with a learned bias.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from mmtx.checkpoints import hf, layout
from mmtx.checkpoints.clip import HF_CLIP_NAMES
from mmtx.checkpoints.family import Converted, two_tower_overrides
from mmtx.checkpoints.preprocess_config import Facts
from mmtx.checkpoints.tensors import CheckpointImportError, Missing, Tensor, TensorSource
from mmtx.checkpoints.two_tower import TowerSizes, grid_side

# HF SigLIP names its tensors as HF CLIP does, but for the text head and the class token.
HF_SIGLIP_NAMES = dataclasses.replace(
    HF_CLIP_NAMES, text_projection="text_model.head.weight", class_tokens=0
)


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


def _map_head_params(
    *, probe: Tensor, attention: Any, norm: Any, fc1: Any, fc2: Any
) -> dict[str, Any]:
    """An mmtx MAP head: the probe ``[1, 1, D]``, attention, LayerNorm and MLP."""
    return {"probe": probe, "attention": attention, "norm": norm, "mlp": {"fc1": fc1, "fc2": fc2}}


# ------------------------------------------------------------------------------ HF


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
    text_cfg, vision_cfg, sizes = hf.read_two_tower(source, hf_config, "hf_siglip", HF_SIGLIP_NAMES)
    if sizes.embed_dim != sizes.image_width:
        raise CheckpointImportError(
            f"hf_siglip: the text head projects to {sizes.embed_dim} but the image embedding "
            f"(the MAP head's output) has width {sizes.image_width}; mmtx needs them equal"
        )
    heads = {
        "text": int(text_cfg.get("num_attention_heads", 12)),
        "image": int(vision_cfg.get("num_attention_heads", 12)),
    }
    activation = hf.activation(vision_cfg.get("hidden_act", "gelu_pytorch_tanh"))
    norm_eps = float(vision_cfg.get("layer_norm_eps", 1e-6))
    text_mlp, image_mlp = HF_SIGLIP_NAMES.mlp_dims(source)
    overrides = _siglip_overrides(
        embed_dim=sizes.embed_dim,
        activation=activation,
        norm_eps=norm_eps,
        text=sizes.text_config(heads["text"], text_mlp),
        image=sizes.image_config(heads["image"], image_mlp),
    )
    params = _hf_siglip_params(source, sizes, heads)
    facts = hf.two_tower_facts(
        hf_config, preprocessor, image_size=sizes.image_size, family="hf_siglip", square=True
    )
    return Converted(overrides, params, grids={"image": (sizes.grid, sizes.grid)}, facts=facts)


def _hf_siglip_params(
    source: TensorSource, sizes: TowerSizes, num_heads: Mapping[str, int]
) -> dict[str, Any]:
    """An HF ``SiglipModel``'s tensors -> mmtx's params (``num_heads``: modality -> heads)."""
    names = HF_SIGLIP_NAMES
    return {
        "text": names.text_params(source, sizes.text_depth, num_heads["text"]),
        "image": layout.patch_tower_params(
            {
                "kernel": layout.conv_kernel(source[names.patch_embedding]),
                "bias": source["vision_model.embeddings.patch_embedding.bias"],
            },
            source[names.image_positions],
            {
                "encoder": names.image_encoder(source, sizes.image_depth, num_heads["image"]),
                "map_head": _hf_map_head(source, num_heads["image"]),
            },
        ),
        "text_head": layout.dense(source, "text_model.head"),
        "logit_scale": layout.reshaped(source["logit_scale"], ()),
        "logit_bias": layout.reshaped(source["logit_bias"], ()),
    }


def _hf_map_head(source: TensorSource, num_heads: int) -> dict[str, Any]:
    """HF SigLIP's ``vision_model.head`` (probe, packed attention, LayerNorm, MLP) -> mmtx."""
    head = "vision_model.head."
    return _map_head_params(
        probe=source[f"{head}probe"],
        attention=layout.attention(
            source,
            num_heads=num_heads,
            packed=f"{head}attention.",
            out=f"{head}attention.out_proj",
        ),
        norm=layout.layer_norm(source, f"{head}layernorm"),
        fc1=layout.dense(source, f"{head}mlp.fc1"),
        fc2=layout.dense(source, f"{head}mlp.fc2"),
    )


# ------------------------------------------------------------------------------ big_vision

FLAX_QUERY_KERNEL = "MultiHeadDotProductAttention_0/query/kernel"
FLAX_MLP_KERNEL = "MlpBlock_0/Dense_0/kernel"


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
    return layout.block_params(
        norm1=_flax_norm(source, f"{prefix}/LayerNorm_0"),
        attention=_flax_attention(source, f"{prefix}/MultiHeadDotProductAttention_0"),
        norm2=_flax_norm(source, f"{prefix}/LayerNorm_1"),
        fc1=_flax_dense(source, f"{prefix}/MlpBlock_0/Dense_0"),
        fc2=_flax_dense(source, f"{prefix}/MlpBlock_0/Dense_1"),
    )


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
    img = f"{p}img"
    sizes, blocks, heads, mlp_dims = _read_big_vision(source, p)
    has_image_head = f"{img}/head/kernel" in source
    if not has_image_head and sizes.embed_dim != sizes.image_width:
        raise CheckpointImportError(
            f"big_vision_siglip: the text head projects to {sizes.embed_dim} but the image "
            f"embedding has width {sizes.image_width} and there is no img/head to project it"
        )
    overrides = _siglip_overrides(
        embed_dim=sizes.embed_dim,
        activation="gelu_tanh",
        norm_eps=1e-6,
        text=sizes.text_config(heads["text"], mlp_dims["text"]),
        image={
            **sizes.image_config(heads["image"], mlp_dims["image"]),
            "projection": "dense" if has_image_head else "none",
        },
    )
    params = _big_vision_params(source, p, sizes, blocks)
    if has_image_head:
        params["image_head"] = _flax_dense(source, f"{img}/head")
    return Converted(
        overrides, params, grids={"image": (sizes.grid, sizes.grid)}, facts=_big_vision_facts()
    )


def _read_big_vision(
    source: TensorSource, prefix: str
) -> tuple[TowerSizes, dict[str, Any], dict[str, int], dict[str, int]]:
    """The sizes of a big_vision SigLIP, read off its tensors' shapes, and per tower
    (modality ->) its converted blocks, heads and MLP width. The blocks are converted as
    their depth is read, before the sizes that come after them: a missing tensor is
    reported with the same neighbours as it always was."""
    img, txt = f"{prefix}img", f"{prefix}txt"
    patch_size, _, _, image_width = source.shape(f"{img}/embedding/kernel")
    positions = source.shape(f"{img}/pos_embedding")[-2]
    grid = grid_side(positions, 0, f"{img}/pos_embedding")
    vocab_size, text_width = source.shape(f"{txt}/Embed_0/embedding")
    context_length = source.shape(f"{txt}/pos_embedding")[-2]
    encoders = {"image": f"{img}/Transformer", "text": f"{txt}/Encoder_0"}
    blocks, depth = {}, {}
    for modality, encoder in encoders.items():
        blocks[modality], depth[modality] = _flax_blocks(source, encoder)
    heads = {modality: _heads(source, encoder) for modality, encoder in encoders.items()}
    mlp_dims = {
        modality: _block_shape(source, encoder, FLAX_MLP_KERNEL)[-1]
        for modality, encoder in encoders.items()
    }
    sizes = TowerSizes(
        vocab_size=vocab_size,
        context_length=context_length,
        text_width=text_width,
        text_depth=depth["text"],
        image_width=image_width,
        image_depth=depth["image"],
        patch_size=patch_size,
        grid=grid,
        embed_dim=source.shape(f"{txt}/head/kernel")[-1],
    )
    return sizes, blocks, heads, mlp_dims


def _big_vision_params(
    source: TensorSource, prefix: str, sizes: TowerSizes, blocks: Mapping[str, Any]
) -> dict[str, Any]:
    """A big_vision SigLIP's tensors -> mmtx's params, but for the optional image head
    (``blocks``: modality -> its converted blocks)."""
    img, txt = f"{prefix}img", f"{prefix}txt"
    return {
        "text": layout.text_params(
            source[f"{txt}/Embed_0/embedding"],
            layout.reshaped(
                source[f"{txt}/pos_embedding"], (sizes.context_length, sizes.text_width)
            ),
            layout.encoder_params(
                blocks["text"], _flax_norm(source, f"{txt}/Encoder_0/encoder_norm")
            ),
        ),
        "image": layout.patch_tower_params(
            _flax_dense(source, f"{img}/embedding"),
            layout.reshaped(source[f"{img}/pos_embedding"], (sizes.grid**2, sizes.image_width)),
            {
                "encoder": layout.encoder_params(
                    blocks["image"], _flax_norm(source, f"{img}/Transformer/encoder_norm")
                ),
                "map_head": _flax_map_head(source, f"{img}/MAPHead_0"),
            },
        ),
        "text_head": _flax_dense(source, f"{txt}/head"),
        "logit_scale": _scalar(source[f"{prefix}t"]),
        "logit_bias": _scalar(source[f"{prefix}b"]),
    }


def _flax_map_head(source: TensorSource, prefix: str) -> dict[str, Any]:
    """big_vision's ``MAPHead_0`` (already flax) -> mmtx."""
    return _map_head_params(
        probe=source[f"{prefix}/probe"],
        attention=_flax_attention(source, f"{prefix}/MultiHeadDotProductAttention_0"),
        norm=_flax_norm(source, f"{prefix}/LayerNorm_0"),
        fc1=_flax_dense(source, f"{prefix}/MlpBlock_0/Dense_0"),
        fc2=_flax_dense(source, f"{prefix}/MlpBlock_0/Dense_1"),
    )


def _big_vision_facts() -> Facts:
    """big_vision's eval preprocessing, which no file of the checkpoint records."""
    facts = Facts()
    pp = "big_vision's eval preprocessing resize(size)"
    facts.set("model.image.resize", "squash", pp)
    facts.set("model.image.interpolation", "bilinear", pp)
    facts.set("model.image.resize_size", 0, pp)
    facts.differences.append(
        "image resizing: big_vision resizes with tf.image.resize (bilinear, no antialiasing); "
        "mmtx with PIL's bilinear filter, which antialiases when shrinking"
    )
    return facts


def _block_shape(source: TensorSource, encoder: str, name: str) -> tuple[int, ...]:
    scanned = f"{encoder}/encoderblock/{name}"
    return source.shape(scanned if scanned in source else f"{encoder}/encoderblock_0/{name}")


def _heads(source: TensorSource, encoder: str) -> int:
    shape = _block_shape(source, encoder, FLAX_QUERY_KERNEL)
    if len(shape) < 3:
        raise CheckpointImportError(
            f"{encoder}: attention kernel of shape {shape} is not per head ([D, heads, head_dim])"
        )
    return int(shape[-2])
