"""Attention bottlenecks (MBT: Nagrani et al., "Attention Bottlenecks for Multimodal Fusion",
NeurIPS 2021)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmtx.fusion.common import (
    ModalityFeatures,
    check_features,
    kept,
    mean_over_kept,
    present_modalities,
    project_tokens,
    self_attention_block,
)
from mmtx.nn.params import logical_param
from mmtx.nn.transformer import StackOptions, layer_norm


class BottleneckFusion(StackOptions):
    """Per-modality transformer layers that exchange information only through a few shared
    bottleneck tokens.

    Each present modality ``m`` gets a stream ``[CLS_m; tokens_m]`` (projected to ``width``)
    with its own weights. Layers ``0 .. fusion_layer - 1`` run each stream alone. From
    ``fusion_layer`` on, every layer runs each stream together with the ``num_bottlenecks``
    shared tokens ``b``: ``[x_m; b_m'] = Block_m([x_m; b])``, and the next ``b`` is the
    per-example mean of ``b_m'`` over the modalities the example keeps. So modality A reaches
    modality B only through ``b``, one layer later. The fused output is the per-example mean
    of the kept modalities' CLS tokens after a final LayerNorm, ``[B, width]``. The
    transformer options are :class:`mmtx.nn.transformer.StackOptions` (``depth`` layers,
    each block :class:`mmtx.nn.TransformerBlock` with this module's block options;
    ``norm_eps`` is the final LayerNorm's too).

    ``out["cls"]`` maps each present modality to its CLS output ``[B, width]`` and
    ``out["bottleneck"]`` is the final bottleneck ``[B, num_bottlenecks, width]``. With
    ``capture_weights``, ``out["attention_weights"]`` maps each block's name
    (``"<modality>_<layer>"``) to its attention probabilities (dense: ``[B, H, T', T']``,
    ``T'`` the stream's ``1 + T_m``, plus ``num_bottlenecks`` in fusing layers, whose keys
    end with the bottleneck tokens).
    """

    width: int
    num_bottlenecks: int = 4
    fusion_layer: int = 0

    @nn.compact
    def __call__(
        self, features: dict[str, ModalityFeatures], *, train: bool = False
    ) -> tuple[jax.Array, dict[str, Any]]:
        """features: present modality -> ModalityFeatures. Returns (``[B, width]``, out)."""
        batch = check_features(features)
        if not 0 <= self.fusion_layer < self.depth:
            raise ValueError(
                f"fusion_layer={self.fusion_layer} must be in [0, depth={self.depth}) so that "
                "at least one layer fuses"
            )
        present = present_modalities(features)
        block = self_attention_block(self, train=train)
        projected = project_tokens(self, features, present)
        streams, masks = {}, {}
        for m in present:
            cls = logical_param(
                self, f"{m}_cls", nn.initializers.zeros, (None, None, "embed"), (1, 1, self.width)
            )
            cls = jnp.broadcast_to(cls.astype(self.dtype), (batch, 1, self.width))
            streams[m] = jnp.concatenate([cls, projected[m]], axis=1)
            masks[m] = jnp.concatenate(
                [jnp.ones((batch, 1), jnp.bool_), features[m].mask.astype(jnp.bool_)], axis=1
            )
        bottleneck = logical_param(
            self,
            "bottleneck",
            nn.initializers.normal(0.02),
            (None, None, "embed"),
            (1, self.num_bottlenecks, self.width),
        )
        bottleneck = jnp.broadcast_to(
            bottleneck.astype(self.dtype), (batch, self.num_bottlenecks, self.width)
        )
        keeps = [kept(features[m]) for m in present]
        bottleneck_mask = jnp.ones((batch, self.num_bottlenecks), jnp.bool_)
        weights = {}
        for layer in range(self.depth):
            if layer < self.fusion_layer:
                for m in present:
                    name = f"{m}_{layer}"
                    streams[m], block_out = block(name=name)(streams[m], masks[m])
                    if self.capture_weights:
                        weights[name] = block_out["attention_weights"]
                continue
            updates = []
            for m in present:
                length = streams[m].shape[1]
                joint, block_out = block(name=f"{m}_{layer}")(
                    jnp.concatenate([streams[m], bottleneck], axis=1),
                    jnp.concatenate([masks[m], bottleneck_mask], axis=1),
                )
                if self.capture_weights:
                    weights[f"{m}_{layer}"] = block_out["attention_weights"]
                streams[m] = joint[:, :length]
                updates.append(joint[:, length:])
            bottleneck = mean_over_kept(updates, keeps)
        norm = layer_norm(self.dtype, self.param_dtype, "norm", self.norm_eps)
        cls_out = {m: norm(streams[m][:, 0]) for m in present}
        fused = mean_over_kept([cls_out[m] for m in present], keeps)
        out = {"cls": cls_out, "bottleneck": bottleneck}
        if self.capture_weights:
            out["attention_weights"] = weights
        return fused, out
