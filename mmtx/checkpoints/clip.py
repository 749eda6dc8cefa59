"""CLIP (Radford et al. 2021) checkpoints: open_clip's OpenAI-style state dicts and HF
``CLIPModel`` files.

Both are a ViT image tower (class token, a position table with a row for it, ``ln_pre``,
pre-LN blocks, LayerNorm, bias-free projection) and a causal text transformer pooled at the
end-of-text token (the highest id in the row), LayerNorm epsilon 1e-5.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from mmtx.checkpoints import layout, preprocess_config
from mmtx.checkpoints.family import Converted, two_tower_overrides
from mmtx.checkpoints.preprocess_config import OPEN_CLIP_CONFIG, Facts
from mmtx.checkpoints.tensors import CheckpointImportError, TensorSource

# OpenAI CLIP's pixel statistics (open_clip's OPENAI_DATASET_MEAN / _STD).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
OPEN_CLIP_HEAD_WIDTH = 64  # open_clip's OpenAI loader: heads = width // 64.

OPEN_CLIP_BLOCK = {
    "norm1": "ln_1",
    "norm2": "ln_2",
    "packed": "attn.",
    "out": "attn.out_proj",
    "fc1": "mlp.c_fc",
    "fc2": "mlp.c_proj",
}
HF_CLIP_BLOCK = {
    "norm1": "layer_norm1",
    "norm2": "layer_norm2",
    "query": "self_attn.q_proj",
    "key": "self_attn.k_proj",
    "value": "self_attn.v_proj",
    "out": "self_attn.out_proj",
    "fc1": "mlp.fc1",
    "fc2": "mlp.fc2",
}


def _grid_side(positions: int, prefix: int, what: str) -> int:
    side = math.isqrt(positions - prefix)
    if side * side != positions - prefix:
        raise CheckpointImportError(
            f"{what} has {positions} rows, not {prefix} + a square grid of patches"
        )
    return side


def _clip_towers(
    *,
    text_width: int,
    text_depth: int,
    text_heads: int,
    text_mlp: int,
    vocab_size: int,
    context_length: int,
    image_width: int,
    image_depth: int,
    image_heads: int,
    image_mlp: int,
    patch_size: int,
    image_size: int,
    embed_dim: int,
    activation: str,
    norm_eps: float,
) -> dict[str, Any]:
    tower = {"activation": activation, "norm_eps": norm_eps, "projection": "no_bias"}
    return two_tower_overrides(
        embed_dim=embed_dim,
        contrastive="softmax",
        text={
            **tower,
            "vocab_size": vocab_size,
            "max_length": context_length,
            "width": text_width,
            "depth": text_depth,
            "num_heads": text_heads,
            "mlp_dim": text_mlp,
            "causal": True,
            "pooling": "eot",
            "position_embedding": "learned",
        },
        image={
            **tower,
            "image_size": image_size,
            "patch_size": patch_size,
            "width": image_width,
            "depth": image_depth,
            "num_heads": image_heads,
            "mlp_dim": image_mlp,
            "pooling": "cls",
            "position_embedding": "learned",
            "class_token_posemb": True,
            "pre_norm": True,
            "patch_bias": False,
            "mean": CLIP_MEAN,
            "std": CLIP_STD,
        },
    )


def convert_open_clip(
    source: TensorSource,
    hf_config: dict[str, Any] | None,
    preprocessor: dict[str, Any] | None,
    num_heads: Mapping[str, int],
) -> Converted:
    """open_clip / OpenAI CLIP state dict (``visual.conv1.weight``,
    ``transformer.resblocks.0.attn.in_proj_weight``, ...) -> mmtx.

    The state dict holds no head count, activation or preprocessing. They come from
    ``num_heads`` (the caller's), else from ``hf_config``: open_clip's ``open_clip_config.json``
    (``{"model_cfg": ..., "preprocess_cfg": ...}``, as a model hub holds it beside the weights)
    or a bare model config (``model_configs/ViT-B-32.json``): ``text_cfg.heads``,
    ``vision_cfg.width // head_width``, ``quick_gelu`` (False: exact GELU),
    ``preprocess_cfg.mean/std/interpolation/resize_mode``; its sizes must agree with the
    tensors. Without either, heads are ``width // 64`` and the activation QuickGELU (OpenAI's
    weights), and :attr:`Converted.notes` says so. ``preprocessor`` is unused (open_clip keeps
    its preprocessing in ``preprocess_cfg``).
    """
    del preprocessor
    model_cfg = dict((hf_config or {}).get("model_cfg", hf_config or {}))
    preprocess_cfg = (hf_config or {}).get("preprocess_cfg")
    source.ignore(["attn_mask", "input_resolution", "context_length", "vocab_size"])
    vocab_size, text_width = source.shape("token_embedding.weight")
    context_length = source.shape("positional_embedding")[0]
    embed_dim = source.shape("text_projection")[1]
    image_width, _, patch_size, _ = source.shape("visual.conv1.weight")
    positions = source.shape("visual.positional_embedding")[0]
    grid = _grid_side(positions, 1, "visual.positional_embedding")
    text_depth = layout.count_layers(source, "transformer.resblocks.{}.ln_1.weight")
    image_depth = layout.count_layers(source, "visual.transformer.resblocks.{}.ln_1.weight")
    text_cfg, vision_cfg = model_cfg.get("text_cfg", {}), model_cfg.get("vision_cfg", {})
    facts = Facts()
    file = OPEN_CLIP_CONFIG
    if model_cfg:
        _check_open_clip_sizes(
            {
                "embed_dim": embed_dim,
                "text_cfg.width": text_width,
                "text_cfg.layers": text_depth,
                "text_cfg.context_length": context_length,
                "text_cfg.vocab_size": vocab_size,
                "vision_cfg.width": image_width,
                "vision_cfg.layers": image_depth,
                "vision_cfg.patch_size": patch_size,
                "vision_cfg.image_size": grid * patch_size,
            },
            model_cfg,
        )
        # open_clip's own defaults (TextCfg.heads = 8, VisionCfg.head_width = 64).
        heads = {
            "text": (
                int(text_cfg.get("heads", 8)),
                f"{file} text_cfg.heads"
                if "heads" in text_cfg
                else f"default: open_clip's (no text_cfg.heads in {file})",
            ),
            "image": (
                image_width // int(vision_cfg.get("head_width", 64)),
                f"{file} vision_cfg.width / head_width"
                if "head_width" in vision_cfg
                else f"default: open_clip's width / 64 (no vision_cfg.head_width in {file})",
            ),
        }
        quick = bool(model_cfg.get("quick_gelu", False))
        facts.set(
            "model.text.activation",
            "quick_gelu" if quick else "gelu",
            f"{file} quick_gelu"
            if "quick_gelu" in model_cfg
            else f"default: open_clip's exact GELU (no quick_gelu in {file})",
        )
    else:
        heads = {
            modality: (
                max(width // OPEN_CLIP_HEAD_WIDTH, 1),
                f"default: width / {OPEN_CLIP_HEAD_WIDTH} (no {file})",
            )
            for modality, width in (("text", text_width), ("image", image_width))
        }
        facts.set("model.text.activation", "quick_gelu", f"default: OpenAI's (no {file})")
        facts.assumed.extend(
            f"{modality} heads: {heads[modality][0]} = width // {OPEN_CLIP_HEAD_WIDTH} (no {file} "
            "beside the weights; --num_heads or the config file sets it)"
            for modality in ("text", "image")
            if modality not in num_heads
        )
        facts.assumed.append(
            f"activation: quick_gelu, OpenAI's (no {file} beside the weights; LAION-trained "
            "models use exact GELU: --activation=gelu or the config file sets it)"
        )
    for modality in ("text", "image"):
        if modality in num_heads:
            heads[modality] = (num_heads[modality], "--num_heads")
        facts.set(f"model.{modality}.num_heads", *heads[modality])
    facts.set(
        "model.image.activation",
        facts.values["model.text.activation"],
        facts.sources["model.text.activation"],
    )
    text_heads, image_heads = heads["text"][0], heads["image"][0]
    overrides = _clip_towers(
        text_width=text_width,
        text_depth=text_depth,
        text_heads=text_heads,
        text_mlp=source.shape("transformer.resblocks.0.mlp.c_fc.weight")[0],
        vocab_size=vocab_size,
        context_length=context_length,
        image_width=image_width,
        image_depth=image_depth,
        image_heads=image_heads,
        image_mlp=source.shape("visual.transformer.resblocks.0.mlp.c_fc.weight")[0],
        patch_size=patch_size,
        image_size=grid * patch_size,
        embed_dim=embed_dim,
        activation=facts.values["model.text.activation"],
        norm_eps=1e-5,
    )
    for field in ("mean", "std"):
        if field in (preprocess_cfg or {}):  # the checkpoint's own normalisation
            facts.set(
                f"model.image.{field}",
                tuple(float(v) for v in preprocess_cfg[field]),
                f"{file} preprocess_cfg.{field}",
            )
        else:
            facts.set(
                f"model.image.{field}",
                CLIP_MEAN if field == "mean" else CLIP_STD,
                f"default: OpenAI's (no preprocess_cfg.{field})",
            )
    facts.update(preprocess_config.open_clip_image(preprocess_cfg, image_size=grid * patch_size))

    params = {
        "text": {
            "token_embed": {"embedding": {"embedding": source["token_embedding.weight"]}},
            "posemb": {"embedding": source["positional_embedding"]},
            "tower": {
                "encoder": {
                    "blocks": layout.torch_blocks(
                        source, "transformer.resblocks.", text_depth, OPEN_CLIP_BLOCK, text_heads
                    ),
                    "norm": layout.layer_norm(source, "ln_final"),
                },
            },
        },
        "image": {
            "patches": {
                "projection": {"kernel": layout.conv_kernel(source["visual.conv1.weight"])}
            },
            "posemb": {"embedding": source["visual.positional_embedding"]},
            "tower": {
                "cls": layout.reshaped(source["visual.class_embedding"], (1, 1, image_width)),
                "pre_norm": layout.layer_norm(source, "visual.ln_pre"),
                "encoder": {
                    "blocks": layout.torch_blocks(
                        source,
                        "visual.transformer.resblocks.",
                        image_depth,
                        OPEN_CLIP_BLOCK,
                        image_heads,
                    ),
                    "norm": layout.layer_norm(source, "visual.ln_post"),
                },
            },
        },
        "text_head": {"kernel": source["text_projection"]},
        "image_head": {"kernel": source["visual.proj"]},
        "logit_scale": layout.reshaped(source["logit_scale"], ()),
    }
    return Converted(overrides, params, grids={"image": (grid, grid)}, facts=facts)


def _check_open_clip_sizes(from_tensors: Mapping[str, int], model_cfg: Mapping[str, Any]) -> None:
    """Raises :class:`CheckpointImportError` when a size in open_clip's config (dotted name ->
    value; a name it lacks is not checked) disagrees with the tensors."""
    for name, actual in from_tensors.items():
        group, _, field = name.rpartition(".")
        holder = model_cfg.get(group, {}) if group else model_cfg
        if field in holder and int(holder[field]) != int(actual):
            raise CheckpointImportError(
                f"open_clip_config.json says {name} = {holder[field]}, but the weights have "
                f"{actual}: the config is not this checkpoint's"
            )


def convert_hf_clip(
    source: TensorSource,
    hf_config: dict[str, Any] | None,
    preprocessor: dict[str, Any] | None,
    num_heads: Mapping[str, int],
) -> Converted:
    """HF transformers ``CLIPModel`` (``text_model.encoder.layers.0.self_attn.q_proj.weight``,
    ``vision_model.embeddings.class_embedding``, ...) -> mmtx. Heads, activation and
    LayerNorm epsilon come from its ``config.json``; the image preprocessing (bicubic
    shortest-edge resize, centre crop, mean/std) from ``preprocessor``, its
    ``preprocessor_config.json``."""
    del num_heads  # read from the config / the tensors' shapes
    if hf_config is None:
        raise CheckpointImportError(
            "hf_clip needs the model's config.json (heads, activation); put it next to the "
            "weights file or pass --hf_config"
        )
    text_cfg, vision_cfg = hf_config.get("text_config", {}), hf_config.get("vision_config", {})
    source.ignore(["text_model.embeddings.position_ids", "vision_model.embeddings.position_ids"])
    vocab_size, text_width = source.shape("text_model.embeddings.token_embedding.weight")
    context_length = source.shape("text_model.embeddings.position_embedding.weight")[0]
    embed_dim = source.shape("text_projection.weight")[0]
    image_width, _, patch_size, _ = source.shape("vision_model.embeddings.patch_embedding.weight")
    positions = source.shape("vision_model.embeddings.position_embedding.weight")[0]
    grid = _grid_side(positions, 1, "vision_model.embeddings.position_embedding.weight")
    text_depth = layout.count_layers(source, "text_model.encoder.layers.{}.layer_norm1.weight")
    image_depth = layout.count_layers(source, "vision_model.encoder.layers.{}.layer_norm1.weight")
    text_heads = int(text_cfg.get("num_attention_heads", 8))
    image_heads = int(vision_cfg.get("num_attention_heads", 12))
    activation = _hf_activation(text_cfg.get("hidden_act", "quick_gelu"))
    if _hf_activation(vision_cfg.get("hidden_act", "quick_gelu")) != activation:
        raise CheckpointImportError("hf_clip: text and vision towers use different activations")
    overrides = _clip_towers(
        text_width=text_width,
        text_depth=text_depth,
        text_heads=text_heads,
        text_mlp=source.shape("text_model.encoder.layers.0.mlp.fc1.weight")[0],
        vocab_size=vocab_size,
        context_length=context_length,
        image_width=image_width,
        image_depth=image_depth,
        image_heads=image_heads,
        image_mlp=source.shape("vision_model.encoder.layers.0.mlp.fc1.weight")[0],
        patch_size=patch_size,
        image_size=grid * patch_size,
        embed_dim=embed_dim,
        activation=activation,
        norm_eps=float(text_cfg.get("layer_norm_eps", 1e-5)),
    )
    facts = hf_tower_facts(hf_config, ("text", "text_config"), ("image", "vision_config"))
    facts.update(
        preprocess_config.hf_image(
            preprocessor, image_size=grid * patch_size, family="hf_clip", square=False
        )
    )

    vision = "vision_model."
    params = {
        "text": hf_text_tower(source, text_depth, text_heads, final_norm="final_layer_norm"),
        "image": {
            "patches": {
                "projection": {
                    "kernel": layout.conv_kernel(
                        source[f"{vision}embeddings.patch_embedding.weight"]
                    )
                }
            },
            "posemb": {"embedding": source[f"{vision}embeddings.position_embedding.weight"]},
            "tower": {
                "cls": layout.reshaped(
                    source[f"{vision}embeddings.class_embedding"], (1, 1, image_width)
                ),
                # (sic: HF's CLIP spells it "pre_layrnorm")
                "pre_norm": layout.layer_norm(source, f"{vision}pre_layrnorm"),
                "encoder": {
                    "blocks": layout.torch_blocks(
                        source, f"{vision}encoder.layers.", image_depth, HF_CLIP_BLOCK, image_heads
                    ),
                    "norm": layout.layer_norm(source, f"{vision}post_layernorm"),
                },
            },
        },
        "text_head": {"kernel": layout.linear_kernel(source["text_projection.weight"])},
        "image_head": {"kernel": layout.linear_kernel(source["visual_projection.weight"])},
        "logit_scale": layout.reshaped(source["logit_scale"], ()),
    }
    return Converted(overrides, params, grids={"image": (grid, grid)}, facts=facts)


def hf_tower_facts(hf_config: Mapping[str, Any], *towers: tuple[str, str]) -> Facts:
    """Where an HF two-tower config's heads, activation and LayerNorm epsilon came from:
    ``towers`` are ``(modality, its sub-config key)``; the values themselves are set by the
    converter (they are the same numbers)."""
    facts = Facts()
    for modality, key in towers:
        cfg = hf_config.get(key, {})
        for ours, theirs in (
            ("num_heads", "num_attention_heads"),
            ("activation", "hidden_act"),
            ("norm_eps", "layer_norm_eps"),
        ):
            where = (
                f"config.json {key}.{theirs}"
                if theirs in cfg
                else f"default: transformers' (no {key}.{theirs} in config.json)"
            )
            facts.sources[f"model.{modality}.{ours}"] = where
    return facts


def hf_text_tower(
    source: TensorSource, depth: int, num_heads: int, *, final_norm: str
) -> dict[str, Any]:
    """An HF CLIP / SigLIP text tower (``text_model.embeddings``, ``text_model.encoder``,
    ``text_model.<final_norm>``) -> mmtx's ``text`` params."""
    text = "text_model."
    return {
        "token_embed": {
            "embedding": {"embedding": source[f"{text}embeddings.token_embedding.weight"]}
        },
        "posemb": {"embedding": source[f"{text}embeddings.position_embedding.weight"]},
        "tower": {
            "encoder": {
                "blocks": layout.torch_blocks(
                    source, f"{text}encoder.layers.", depth, HF_CLIP_BLOCK, num_heads
                ),
                "norm": layout.layer_norm(source, f"{text}{final_norm}"),
            },
        },
    }


def _hf_activation(name: str) -> str:
    """An HF ``hidden_act`` name -> mmtx's activation name."""
    names = {
        "quick_gelu": "quick_gelu",
        "gelu": "gelu",
        "gelu_pytorch_tanh": "gelu_tanh",
        "gelu_new": "gelu_tanh",
        "gelu_fast": "gelu_tanh",
    }
    if name not in names:
        raise CheckpointImportError(
            f"activation {name!r} has no mmtx counterpart (mmtx has {sorted(set(names.values()))})"
        )
    return names[name]
