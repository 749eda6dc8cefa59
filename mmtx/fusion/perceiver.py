"""Perceiver fusion (Jaegle et al., "Perceiver", ICML 2021; "Perceiver IO", ICLR 2022)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import FrozenDict

from mmtx.fusion.common import (
    ModalityFeatures,
    block_class,
    block_kwargs,
    check_features,
    present_modalities,
    project_tokens,
    visible_mask,
)
from mmtx.nn.transformer import CrossAttentionBlock, TransformerBlock, layer_norm

Dtype = Any


class PerceiverFusion(nn.Module):
    """A learned latent array ``[num_latents, width]`` reads all modality tokens by
    cross-attention, then self-attends; repeated ``depth`` times.

    Every present modality's tokens are projected to ``width`` (plus a modality embedding)
    and concatenated into one byte array ``[B, sum T_m, width]`` whose padded tokens and
    dropped modalities (``keep``) are masked. Each layer is a
    :class:`mmtx.nn.CrossAttentionBlock` (latents -> tokens) followed by
    ``latent_layers`` self-attention blocks over the latents, so the cost grows linearly with
    the total token count (only the projections and the cross-attention see the tokens) and
    quadratically only in ``num_latents``. The fused output is the mean latent after a final
    LayerNorm, ``[B, width]``; ``out["latents"]`` is ``[B, num_latents, width]``. With
    ``capture_weights``, ``out["attention_weights"]`` maps each block's name to its attention
    probabilities: ``"cross_<layer>"`` latents -> tokens ``[B, H, num_latents, sum T_m]``,
    ``"latent_<layer>_<sub>"`` latents -> latents ``[B, H, num_latents, num_latents]``
    (dense kernels).
    """

    width: int
    depth: int
    num_heads: int
    mlp_dim: int
    num_latents: int = 16
    latent_layers: int = 1
    attention: str = "dense"
    attention_options: FrozenDict[str, Any] = FrozenDict()
    attention_implementation: str | None = None
    cross_attention: str = "dense"
    cross_attention_options: FrozenDict[str, Any] = FrozenDict()
    dropout_rate: float = 0.0
    remat: str = "none"
    capture_weights: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self, features: dict[str, ModalityFeatures], *, train: bool = False
    ) -> tuple[jax.Array, dict[str, Any]]:
        """features: present modality -> ModalityFeatures. Returns (``[B, width]``, out)."""
        batch = check_features(features)
        present = present_modalities(features)
        projected = project_tokens(self, features, present)
        tokens = jnp.concatenate([projected[m] for m in present], axis=1)
        mask = jnp.concatenate([visible_mask(features[m]) for m in present], axis=1)
        latents = self.param(
            "latents",
            nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, None, "embed")),
            (1, self.num_latents, self.width),
            self.param_dtype,
        )
        x = jnp.broadcast_to(latents.astype(self.dtype), (batch, self.num_latents, self.width))
        common = block_kwargs(self, train=train)
        cross_block = block_class(CrossAttentionBlock, self.remat)
        self_block = block_class(TransformerBlock, self.remat)
        weights = {}
        for layer in range(self.depth):
            x, block_out = cross_block(
                attention=self.cross_attention,
                attention_options=self.cross_attention_options,
                attention_implementation=self.attention_implementation,
                **common,
                name=f"cross_{layer}",
            )(x, tokens, mask)
            if self.capture_weights:
                weights[f"cross_{layer}"] = block_out["attention_weights"]
            for sub in range(self.latent_layers):
                x, block_out = self_block(
                    attention=self.attention,
                    attention_options=self.attention_options,
                    attention_implementation=self.attention_implementation,
                    **common,
                    name=f"latent_{layer}_{sub}",
                )(x, None)
                if self.capture_weights:
                    weights[f"latent_{layer}_{sub}"] = block_out["attention_weights"]
        x = layer_norm(self.dtype, self.param_dtype, "norm")(x)
        out = {"latents": x}
        if self.capture_weights:
            out["attention_weights"] = weights
        return jnp.mean(x, axis=1), out
