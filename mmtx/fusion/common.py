"""What every fusion module receives."""

from __future__ import annotations

from typing import NamedTuple

import jax

# Fixed order: modality embeddings and gate weights are indexed by position in this tuple.
MODALITIES = ("text", "image", "audio")


class ModalityFeatures(NamedTuple):
    """One modality's encoder output.

    tokens: ``[B, T, D_m]`` float; mask: bool ``[B, T]`` (True = real token);
    pooled: ``[B, D_m]`` float; keep: bool ``[B]`` or None: False drops this modality for
    that example, as if it were absent (modality dropout); None keeps it everywhere.
    """

    tokens: jax.Array
    mask: jax.Array
    pooled: jax.Array
    keep: jax.Array | None = None


def check_features(features: dict[str, ModalityFeatures]) -> int:
    """Validates a features dict; returns the shared batch size."""
    if not features:
        raise ValueError("fusion needs at least one modality; got none")
    unknown = set(features) - set(MODALITIES)
    if unknown:
        raise ValueError(f"unknown modalities {sorted(unknown)}; known: {MODALITIES}")
    sizes = {name: f.tokens.shape[0] for name, f in features.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"modalities disagree on batch size: {sizes}")
    return next(iter(sizes.values()))
