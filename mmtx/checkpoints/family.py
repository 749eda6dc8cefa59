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
      notes: what the conversion assumed because neither the files nor the caller said it
        (one line each, for the user); empty when every fact came from the checkpoint.
      differences: what mmtx does differently from the original's own preprocessing (one
        line each, for the user).
      sources: dotted config field (``model.text.num_heads``) -> where its value came from
        (a file and key, a flag, a default), for every value not read off the tensors' shapes.
    """

    overrides: dict[str, Any]
    params: dict[str, Any]
    grids: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    differences: list[str] = dataclasses.field(default_factory=list)
    sources: dict[str, str] = dataclasses.field(default_factory=dict)

    def take(self, facts: Facts) -> None:
        """Merges ``facts`` (values read from the checkpoint's files, flags or defaults) into
        the overrides, and its sources and lines into these."""
        _merge(self.overrides, facts.overrides())
        self.sources.update(facts.sources)
        self.notes.extend(facts.assumed)
        self.differences.extend(facts.differences)


def _merge(into: dict[str, Any], overrides: dict[str, Any]) -> None:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


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
