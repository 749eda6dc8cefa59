"""What a family's converter returns, and the config every two-tower import shares."""

from __future__ import annotations

import dataclasses
from typing import Any

from mmtx.checkpoints.preprocess_config import Facts


@dataclasses.dataclass
class Converted:
    """A checkpoint converted to mmtx.

    Attributes:
      overrides: nested config overrides (merged onto ``mmtx.config.default_config()``).
      params: the mmtx param tree, numpy leaves (``Missing`` for absent tensors).
      grids: modality -> the ``(rows, cols)`` patch grid of its learned position table (for
        resampling to another input size).
      facts: the config values read from the checkpoint's files, the caller's flags or
        stated defaults (merged over ``overrides``), each with its source, and the lines for
        what was assumed or what mmtx does differently from the original's preprocessing.
    """

    overrides: dict[str, Any]
    params: dict[str, Any]
    grids: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
    facts: Facts = dataclasses.field(default_factory=Facts)


def two_tower_overrides(
    *, embed_dim: int, contrastive: str, text: dict[str, Any], image: dict[str, Any]
) -> dict[str, Any]:
    """Config overrides of a two-tower contrastive model (CLIP, SigLIP): text and image
    towers, no fusion, no classifier, the family's contrastive loss only."""
    return {
        "model": {
            "modalities": ("text", "image"),
            "embed_dim": embed_dim,
            "num_classes": 0,
            "text": text,
            "image": image,
        },
        "fusion": {"type": "none"},
        "loss": {"contrastive": contrastive, "classification_weight": 0.0},
    }
