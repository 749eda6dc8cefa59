"""Co-attention fusion (ViLBERT, Lu et al. 2019; LXMERT, Tan & Bansal 2019)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmtx.encoders.tower import masked_mean
from mmtx.fusion.common import (
    CrossStackOptions,
    ModalityFeatures,
    check_features,
    cross_attention_block,
    kept,
    mean_over_kept,
    present_modalities,
    project_tokens,
    self_attention_block,
    visible_mask,
)
from mmtx.nn.transformer import layer_norm


class CrossAttentionFusion(CrossStackOptions):
    """One stream per modality; in every layer each stream's tokens cross-attend to the other
    present modalities' tokens, then self-attend.

    Layer ``l`` updates every stream from the streams of layer ``l - 1`` (all modalities in
    parallel, as in ViLBERT's co-attention): ``x_m <- CrossAttentionBlock(x_m, concat_{n != m}
    x_n)`` then ``x_m <- TransformerBlock(x_m)``. Each stream has its own weights. A stream's
    keys exclude padded tokens and the tokens of modalities an example drops (``keep``). The
    fused output is, per example, the mean over its kept modalities of each stream's masked
    mean token after a final LayerNorm: ``[B, width]``. With one modality present the
    cross-attention is skipped and the module is a per-modality transformer.

    The transformer options are :class:`mmtx.fusion.common.CrossStackOptions`: every block gets
    this module's block options, the cross-attention blocks with ``cross_attention`` and
    ``cross_attention_options`` as their kernel (``causal`` is the self-attention blocks'
    only); ``norm_eps`` is the final LayerNorms' too.

    ``out["tokens"]`` maps each present modality to its final stream ``[B, T_m, width]``.
    With ``capture_weights``, ``out["attention_weights"]`` maps each block's name to its
    attention probabilities: ``"<m>_cross_<layer>"`` modality ``m``'s tokens -> the other
    modalities' tokens (concatenated in ``MODALITIES`` order) ``[B, H, T_m, sum_{n != m} T_n]``
    and ``"<m>_self_<layer>"`` ``[B, H, T_m, T_m]`` (dense kernels).
    """

    width: int

    @nn.compact
    def __call__(
        self, features: dict[str, ModalityFeatures], *, train: bool = False
    ) -> tuple[jax.Array, dict[str, Any]]:
        """features: present modality -> ModalityFeatures. Returns (``[B, width]``, out)."""
        check_features(features)
        present = present_modalities(features)
        cross_block = cross_attention_block(self, train=train)
        self_block = self_attention_block(self, train=train)
        streams = project_tokens(self, features, present)
        masks = {m: features[m].mask.astype(jnp.bool_) for m in present}
        visible = {m: visible_mask(features[m]) for m in present}
        weights = {}
        for layer in range(self.depth):
            updated = {}
            for m in present:
                x = streams[m]
                others = [n for n in present if n != m]
                if others:
                    name = f"{m}_cross_{layer}"
                    x, block_out = cross_block(name=name)(
                        x,
                        jnp.concatenate([streams[n] for n in others], axis=1),
                        jnp.concatenate([visible[n] for n in others], axis=1),
                    )
                    if self.capture_weights:
                        weights[name] = block_out["attention_weights"]
                x, block_out = self_block(name=f"{m}_self_{layer}")(x, masks[m])
                if self.capture_weights:
                    weights[f"{m}_self_{layer}"] = block_out["attention_weights"]
                updated[m] = x
            streams = updated
        streams = {
            m: layer_norm(self.dtype, self.param_dtype, f"{m}_norm", self.norm_eps)(x)
            for m, x in streams.items()
        }
        pooled = [masked_mean(streams[m], masks[m]) for m in present]
        fused = mean_over_kept(pooled, [kept(features[m]) for m in present])
        out = {"tokens": streams}
        if self.capture_weights:
            out["attention_weights"] = weights
        return fused, out
