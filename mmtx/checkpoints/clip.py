"""CLIP (Radford et al. 2021) checkpoints: open_clip's OpenAI-style state dicts and HF
``CLIPModel`` files.

Both are a ViT image tower (class token, a position table with a row for it, ``ln_pre``,
pre-LN blocks, LayerNorm, bias-free projection) and a causal text transformer pooled at the
end-of-text token (the highest id in the row), LayerNorm epsilon 1e-5.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mmtx.checkpoints import hf, layout, preprocess_config
from mmtx.checkpoints.family import Converted, two_tower_overrides
from mmtx.checkpoints.preprocess_config import OPEN_CLIP_CONFIG, Facts
from mmtx.checkpoints.tensors import CheckpointImportError, TensorSource
from mmtx.checkpoints.two_tower import TorchNames, TowerSizes

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
OPEN_CLIP_NAMES = TorchNames(
    token_embedding="token_embedding.weight",
    text_positions="positional_embedding",
    text_blocks="transformer.resblocks.",
    text_norm="ln_final",
    text_projection="text_projection",  # [D, E]
    projection_axis=1,
    patch_embedding="visual.conv1.weight",
    image_positions="visual.positional_embedding",
    class_tokens=1,
    image_blocks="visual.transformer.resblocks.",
    image_norm="visual.ln_post",
    block=OPEN_CLIP_BLOCK,
)
HF_CLIP_NAMES = TorchNames(
    token_embedding="text_model.embeddings.token_embedding.weight",
    text_positions="text_model.embeddings.position_embedding.weight",
    text_blocks="text_model.encoder.layers.",
    text_norm="text_model.final_layer_norm",
    text_projection="text_projection.weight",  # a torch Linear: [E, D]
    projection_axis=0,
    patch_embedding="vision_model.embeddings.patch_embedding.weight",
    image_positions="vision_model.embeddings.position_embedding.weight",
    class_tokens=1,
    image_blocks="vision_model.encoder.layers.",
    image_norm="vision_model.post_layernorm",
    block=HF_CLIP_BLOCK,
)


def _clip_overrides(
    sizes: TowerSizes,
    *,
    num_heads: Mapping[str, int],
    mlp_dims: tuple[int, int],
    activation: str,
    norm_eps: float,
) -> dict[str, Any]:
    """The config of a CLIP model of these sizes (``num_heads``: modality -> heads;
    ``mlp_dims``: the text and image MLP widths)."""
    tower = {"activation": activation, "norm_eps": norm_eps, "projection": "no_bias"}
    text_mlp, image_mlp = mlp_dims
    return two_tower_overrides(
        embed_dim=sizes.embed_dim,
        contrastive="softmax",
        text={
            **tower,
            **sizes.text_config(num_heads["text"], text_mlp),
            "causal": True,
            "pooling": "eot",
            "position_embedding": "learned",
        },
        image={
            **tower,
            **sizes.image_config(num_heads["image"], image_mlp),
            "pooling": "cls",
            "position_embedding": "learned",
            "class_token_posemb": True,
            "pre_norm": True,
            "patch_bias": False,
            "mean": CLIP_MEAN,
            "std": CLIP_STD,
        },
    )


def _clip_image_params(
    source: TensorSource,
    names: TorchNames,
    sizes: TowerSizes,
    num_heads: int,
    *,
    class_embedding: str,
    pre_norm: str,
) -> dict[str, Any]:
    """A CLIP image tower's params: bias-free patch convolution, position table, class
    token ``[1, 1, D]``, pre-encoder LayerNorm, encoder."""
    return layout.patch_tower_params(
        {"kernel": layout.conv_kernel(source[names.patch_embedding])},
        source[names.image_positions],
        {
            "cls": layout.reshaped(source[class_embedding], (1, 1, sizes.image_width)),
            "pre_norm": layout.layer_norm(source, pre_norm),
            "encoder": names.image_encoder(source, sizes.image_depth, num_heads),
        },
    )


# ------------------------------------------------------------------------------ open_clip


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
    sizes = OPEN_CLIP_NAMES.sizes(source)
    heads, facts = _open_clip_heads_and_activation(sizes, model_cfg, num_heads)
    overrides = _clip_overrides(
        sizes,
        num_heads=heads,
        mlp_dims=OPEN_CLIP_NAMES.mlp_dims(source),
        activation=facts.values["model.text.activation"],
        norm_eps=1e-5,
    )
    facts.update(_open_clip_normalisation(preprocess_cfg))
    facts.update(preprocess_config.open_clip_image(preprocess_cfg, image_size=sizes.image_size))
    params = {
        "text": OPEN_CLIP_NAMES.text_params(source, sizes.text_depth, heads["text"]),
        "image": _clip_image_params(
            source,
            OPEN_CLIP_NAMES,
            sizes,
            heads["image"],
            class_embedding="visual.class_embedding",
            pre_norm="visual.ln_pre",
        ),
        "text_head": {"kernel": source["text_projection"]},
        "image_head": {"kernel": source["visual.proj"]},
        "logit_scale": layout.reshaped(source["logit_scale"], ()),
    }
    return Converted(overrides, params, grids={"image": (sizes.grid, sizes.grid)}, facts=facts)


def _open_clip_heads_and_activation(
    sizes: TowerSizes, model_cfg: Mapping[str, Any], num_heads: Mapping[str, int]
) -> tuple[dict[str, int], Facts]:
    """Each tower's heads (modality -> count) and the facts saying where they and the
    activation came from: ``num_heads``, else open_clip's ``model_cfg`` (checked against
    ``sizes``), else OpenAI's rules (and an ``assumed`` line each)."""
    if model_cfg:
        _check_open_clip_sizes(_open_clip_config_sizes(sizes), model_cfg)
        heads, facts = _configured_heads_and_activation(model_cfg, sizes.image_width)
    else:
        heads, facts = _default_heads_and_activation(sizes, num_heads)
    for modality in ("text", "image"):
        if modality in num_heads:
            heads[modality] = (num_heads[modality], "--num_heads")
        facts.set(f"model.{modality}.num_heads", *heads[modality])
    facts.set(
        "model.image.activation",
        facts.values["model.text.activation"],
        facts.sources["model.text.activation"],
    )
    return {modality: count for modality, (count, _) in heads.items()}, facts


def _open_clip_config_sizes(sizes: TowerSizes) -> dict[str, int]:
    """The sizes open_clip's config states (dotted name -> value), as the tensors have them."""
    return {
        "embed_dim": sizes.embed_dim,
        "text_cfg.width": sizes.text_width,
        "text_cfg.layers": sizes.text_depth,
        "text_cfg.context_length": sizes.context_length,
        "text_cfg.vocab_size": sizes.vocab_size,
        "vision_cfg.width": sizes.image_width,
        "vision_cfg.layers": sizes.image_depth,
        "vision_cfg.patch_size": sizes.patch_size,
        "vision_cfg.image_size": sizes.image_size,
    }


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


def _configured_heads_and_activation(
    model_cfg: Mapping[str, Any], image_width: int
) -> tuple[dict[str, tuple[int, str]], Facts]:
    """Heads (modality -> (count, where from)) and activation from open_clip's model config,
    open_clip's own defaults where it lacks them (TextCfg.heads = 8, VisionCfg.head_width =
    64, exact GELU)."""
    file = OPEN_CLIP_CONFIG
    text_cfg, vision_cfg = model_cfg.get("text_cfg", {}), model_cfg.get("vision_cfg", {})
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
    facts = Facts()
    quick = bool(model_cfg.get("quick_gelu", False))
    facts.set(
        "model.text.activation",
        "quick_gelu" if quick else "gelu",
        f"{file} quick_gelu"
        if "quick_gelu" in model_cfg
        else f"default: open_clip's exact GELU (no quick_gelu in {file})",
    )
    return heads, facts


def _default_heads_and_activation(
    sizes: TowerSizes, num_heads: Mapping[str, int]
) -> tuple[dict[str, tuple[int, str]], Facts]:
    """Heads (modality -> (count, where from)) and activation by OpenAI's rules, for a state
    dict without open_clip's config: ``width // 64`` heads, QuickGELU; an ``assumed`` line
    for each (but the heads ``num_heads`` gives)."""
    file = OPEN_CLIP_CONFIG
    heads = {
        modality: (
            max(width // OPEN_CLIP_HEAD_WIDTH, 1),
            f"default: width / {OPEN_CLIP_HEAD_WIDTH} (no {file})",
        )
        for modality, width in (("text", sizes.text_width), ("image", sizes.image_width))
    }
    facts = Facts()
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
    return heads, facts


def _open_clip_normalisation(preprocess_cfg: Mapping[str, Any] | None) -> Facts:
    """The image mean and std: the checkpoint's own (``preprocess_cfg``), else OpenAI's."""
    facts = Facts()
    for field, default in (("mean", CLIP_MEAN), ("std", CLIP_STD)):
        if field in (preprocess_cfg or {}):
            facts.set(
                f"model.image.{field}",
                tuple(float(v) for v in preprocess_cfg[field]),
                f"{OPEN_CLIP_CONFIG} preprocess_cfg.{field}",
            )
        else:
            facts.set(
                f"model.image.{field}", default, f"default: OpenAI's (no preprocess_cfg.{field})"
            )
    return facts


# ------------------------------------------------------------------------------ HF CLIP


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
    text_cfg, vision_cfg, sizes = hf.read_two_tower(source, hf_config, "hf_clip", HF_CLIP_NAMES)
    heads = {
        "text": int(text_cfg.get("num_attention_heads", 8)),
        "image": int(vision_cfg.get("num_attention_heads", 12)),
    }
    activation = hf.activation(text_cfg.get("hidden_act", "quick_gelu"))
    if hf.activation(vision_cfg.get("hidden_act", "quick_gelu")) != activation:
        raise CheckpointImportError("hf_clip: text and vision towers use different activations")
    overrides = _clip_overrides(
        sizes,
        num_heads=heads,
        mlp_dims=HF_CLIP_NAMES.mlp_dims(source),
        activation=activation,
        norm_eps=float(text_cfg.get("layer_norm_eps", 1e-5)),
    )
    facts = hf.two_tower_facts(
        hf_config, preprocessor, image_size=sizes.image_size, family="hf_clip", square=False
    )
    params = {
        "text": HF_CLIP_NAMES.text_params(source, sizes.text_depth, heads["text"]),
        "image": _clip_image_params(
            source,
            HF_CLIP_NAMES,
            sizes,
            heads["image"],
            class_embedding="vision_model.embeddings.class_embedding",
            pre_norm="vision_model.pre_layrnorm",  # (sic: HF's CLIP spells it "pre_layrnorm")
        ),
        "text_head": {"kernel": layout.linear_kernel(source["text_projection.weight"])},
        "image_head": {"kernel": layout.linear_kernel(source["visual_projection.weight"])},
        "logit_scale": layout.reshaped(source["logit_scale"], ()),
    }
    return Converted(overrides, params, grids={"image": (sizes.grid, sizes.grid)}, facts=facts)
