"""Perceiver fusion (Jaegle et al., "Perceiver", ICML 2021; "Perceiver IO", ICLR 2022)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmtx.fusion.common import (
    CrossStackOptions,
    ModalityFeatures,
    check_features,
    cross_attention_block,
    present_modalities,
    project_tokens,
    self_attention_block,
    visible_mask,
)
from mmtx.nn.params import logical_param
from mmtx.nn.transformer import layer_norm


class PerceiverFusion(CrossStackOptions):
    """A learned latent array ``[num_latents, width]`` reads all modality tokens by
    cross-attention, then self-attends; repeated ``depth`` times.

    Every present modality's tokens are projected to ``width`` (plus a modality embedding)
    and concatenated into one byte array ``[B, sum T_m, width]`` whose padded tokens and
    dropped modalities (``keep``) are masked. Each layer is a
    :class:`mmtx.nn.CrossAttentionBlock` (latents -> tokens) followed by
    ``latent_layers`` self-attention blocks over the latents, so the cost grows linearly with
    the total token count (only the projections and the cross-attention see the tokens) and
    quadratically only in ``num_latents``. The fused output is the mean latent after a final
    LayerNorm, ``[B, width]``; ``out["latents"]`` is ``[B, num_latents, width]``. The
    transformer options are :class:`mmtx.fusion.common.CrossStackOptions`: every block gets this
    module's block options, the cross-attention blocks with ``cross_attention`` and
    ``cross_attention_options`` as their kernel (``causal`` is the self-attention blocks'
    only); ``norm_eps`` is the final LayerNorm's too. With
    ``capture_weights``, ``out["attention_weights"]`` maps each block's name to its attention
    probabilities: ``"cross_<layer>"`` latents -> tokens ``[B, H, num_latents, sum T_m]``,
    ``"latent_<layer>_<sub>"`` latents -> latents ``[B, H, num_latents, num_latents]``
    (dense kernels).
    """

    width: int
    num_latents: int = 16
    latent_layers: int = 1

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
        latents = logical_param(
            self,
            "latents",
            nn.initializers.normal(0.02),
            (None, None, "embed"),
            (1, self.num_latents, self.width),
        )
        x = jnp.broadcast_to(latents.astype(self.dtype), (batch, self.num_latents, self.width))
        cross_block = cross_attention_block(self, train=train)
        self_block = self_attention_block(self, train=train)
        weights = {}
        for layer in range(self.depth):
            x, block_out = cross_block(name=f"cross_{layer}")(x, tokens, mask)
            if self.capture_weights:
                weights[f"cross_{layer}"] = block_out["attention_weights"]
            for sub in range(self.latent_layers):
                x, block_out = self_block(name=f"latent_{layer}_{sub}")(x, None)
                if self.capture_weights:
                    weights[f"latent_{layer}_{sub}"] = block_out["attention_weights"]
        x = layer_norm(self.dtype, self.param_dtype, "norm", self.norm_eps)(x)
        out = {"latents": x}
        if self.capture_weights:
            out["attention_weights"] = weights
        return jnp.mean(x, axis=1), out
