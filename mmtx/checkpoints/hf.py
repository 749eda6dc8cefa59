"""What the HF transformers families (CLIP, SigLIP, AST) share: the ``config.json`` they
need, its activation names, and where each config value came from."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mmtx.checkpoints import preprocess_config
from mmtx.checkpoints.preprocess_config import Facts
from mmtx.checkpoints.tensors import CheckpointImportError, TensorSource
from mmtx.checkpoints.two_tower import TorchNames, TowerSizes

# HF buffers with no mmtx counterpart (the position ids every embedding layer registers).
POSITION_IDS = ("text_model.embeddings.position_ids", "vision_model.embeddings.position_ids")
# mmtx's config field -> the HF config key it is read from (in each tower's sub-config).
TOWER_FIELDS = (
    ("num_heads", "num_attention_heads"),
    ("activation", "hidden_act"),
    ("norm_eps", "layer_norm_eps"),
)
ACTIVATIONS = {
    "quick_gelu": "quick_gelu",
    "gelu": "gelu",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_new": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
}


def require_config(hf_config: dict[str, Any] | None, family: str, needs: str) -> dict[str, Any]:
    """``hf_config``, or a :class:`CheckpointImportError` saying that ``family`` cannot be
    converted without its ``config.json`` (which holds ``needs``)."""
    if hf_config is None:
        raise CheckpointImportError(
            f"{family} needs the model's config.json ({needs}); put it next to the weights "
            "file or pass --hf_config"
        )
    return hf_config


def activation(name: str) -> str:
    """An HF ``hidden_act`` name -> mmtx's activation name."""
    if name not in ACTIVATIONS:
        raise CheckpointImportError(
            f"activation {name!r} has no mmtx counterpart "
            f"(mmtx has {sorted(set(ACTIVATIONS.values()))})"
        )
    return ACTIVATIONS[name]


def tower_sources(facts: Facts, config: Mapping[str, Any], modality: str, key: str = "") -> None:
    """Records in ``facts.sources`` where ``modality``'s heads, activation and LayerNorm
    epsilon came from: ``config``, the tower's (sub-)config, read from ``config.json`` under
    ``key`` (empty: the top level), or transformers' defaults where it lacks them."""
    where = f"{key}." if key else ""
    for ours, theirs in TOWER_FIELDS:
        facts.sources[f"model.{modality}.{ours}"] = (
            f"config.json {where}{theirs}"
            if theirs in config
            else f"default: transformers' (no {where}{theirs} in config.json)"
        )


def hf_tower_facts(hf_config: Mapping[str, Any], *towers: tuple[str, str]) -> Facts:
    """Where an HF two-tower config's heads, activation and LayerNorm epsilon came from:
    ``towers`` are ``(modality, its sub-config key)``; the values themselves are set by the
    converter (they are the same numbers)."""
    facts = Facts()
    for modality, key in towers:
        tower_sources(facts, hf_config.get(key, {}), modality, key)
    return facts


def read_two_tower(
    source: TensorSource, hf_config: dict[str, Any] | None, family: str, names: TorchNames
) -> tuple[dict[str, Any], dict[str, Any], TowerSizes]:
    """The first reading of an HF two-tower checkpoint (CLIP, SigLIP): its ``config.json``
    (required) as the text and vision sub-configs, the position-id buffers ignored, and the
    sizes read off the tensors' shapes (:meth:`TorchNames.sizes`)."""
    config = require_config(hf_config, family, "heads, activation")
    text_cfg, vision_cfg = config.get("text_config", {}), config.get("vision_config", {})
    source.ignore(POSITION_IDS)
    return text_cfg, vision_cfg, names.sizes(source)


def two_tower_facts(
    hf_config: Mapping[str, Any],
    preprocessor: Mapping[str, Any] | None,
    *,
    image_size: int,
    family: str,
    square: bool,
) -> Facts:
    """Where an HF two-tower model's tower values came from (:func:`hf_tower_facts`) and
    its image preprocessing (:func:`preprocess_config.hf_image`)."""
    facts = hf_tower_facts(hf_config, ("text", "text_config"), ("image", "vision_config"))
    facts.update(
        preprocess_config.hf_image(
            preprocessor, image_size=image_size, family=family, square=square
        )
    )
    return facts
