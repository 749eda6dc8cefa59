"""Late fusion: a learned, softmax-normalised weighting of the pooled modality embeddings."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmtx.fusion.common import (
    ModalityFeatures,
    check_features,
    present_modalities,
    table_index,
)
from mmtx.modalities import modality_names
from mmtx.nn.attention import default_kernel_init

Dtype = Any


class GatedFusion(nn.Module):
    """``fused = sum_m w_m * W_m pooled_m`` over the present modalities.

    ``w = softmax(g[present])`` where ``g`` ``[len(modalities)]`` are learned gate logits (one
    row per entry of ``modalities``, the model's :func:`mmtx.modalities.fusion_order`;
    empty: every registered modality), so
    the weights always sum to one over whichever modalities are present (per example, over
    those it keeps, see ``ModalityFeatures.keep``). ``out["weights"]``
    maps each present modality to its weight, float32 ``[]``, so a user can see which
    modality the model relies on. Returns ``[B, width]``.
    """

    width: int
    modalities: tuple[str, ...] = ()
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self, features: dict[str, ModalityFeatures], *, train: bool = False
    ) -> tuple[jax.Array, dict[str, Any]]:
        """features: present modality -> ModalityFeatures. Returns (``[B, width]``, out)."""
        del train  # no dropout or batch statistics
        check_features(features)
        rows = self.modalities or modality_names()
        shape = (len(rows),)
        gate_logits = self.param("gate_logits", nn.initializers.zeros, shape, self.param_dtype)
        present = present_modalities(features)
        index = jnp.asarray([table_index(rows, name) for name in present])
        logits = gate_logits[index].astype(jnp.float32)
        weights = jax.nn.softmax(logits)
        batch = features[present[0]].pooled.shape[0]
        keep = jnp.stack(
            [
                jnp.ones((batch,), jnp.bool_) if features[n].keep is None else features[n].keep
                for n in present
            ],
            axis=1,
        )
        # Per example, the weights renormalise over the modalities it keeps.
        per_example = jax.nn.softmax(jnp.where(keep, logits[None], -1e9), axis=-1)
        projected = [
            nn.Dense(
                self.width,
                kernel_init=nn.with_logical_partitioning(default_kernel_init, (None, "embed")),
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"{name}_projection",
            )(features[name].pooled)
            for name in present
        ]
        fused = sum(per_example[:, i, None].astype(p.dtype) * p for i, p in enumerate(projected))
        return fused, {"weights": dict(zip(present, weights, strict=True))}
