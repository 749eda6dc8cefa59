"""Early fusion: one joint transformer over the tokens of every present modality."""

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
from mmtx.nn import Encoder
from mmtx.nn.attention import default_kernel_init
from mmtx.nn.options import options
from mmtx.nn.params import logical_param
from mmtx.nn.transformer import EncoderOptions


class ConcatFusion(EncoderOptions):
    """Projects each modality's tokens to ``width``, adds a learned modality embedding,
    prepends a fusion CLS token, and runs a joint :class:`mmtx.nn.Encoder` over the concatenation.

    Padded tokens, and every token of a modality an example drops (``keep``), stay masked in
    the joint attention. The fused output is the CLS token,
    ``[B, width]``; ``out["tokens"]`` is the joint sequence ``[B, 1 + sum T_m, width]`` and
    ``out["mask"]`` its mask. The modality embedding table has one row per entry of
    ``modalities`` (:func:`mmtx.modalities.fusion_order` of the model's modalities; empty:
    every registered modality). With ``capture_weights``, ``out["attention_weights"]`` is
    the joint attention of every layer, stacked: ``[depth, B, H, N, N]`` (``N = 1 + sum
    T_m``) for the dense kernel (see :class:`mmtx.nn.Encoder`). The joint encoder (``encoder``)
    gets this module's options, :class:`mmtx.nn.transformer.EncoderOptions`, whole.
    """

    width: int
    modalities: tuple[str, ...] = ()

    @nn.compact
    def __call__(
        self, features: dict[str, ModalityFeatures], *, train: bool = False
    ) -> tuple[jax.Array, dict[str, Any]]:
        """features: present modality -> ModalityFeatures. Returns (``[B, width]``, out)."""
        batch = check_features(features)
        modality_embedding = logical_param(
            self,
            "modality_embedding",
            nn.initializers.normal(0.02),
            (None, "embed"),
            (len(self.modalities or modality_names()), self.width),
        )
        cls = logical_param(
            self, "cls", nn.initializers.zeros, (None, None, "embed"), (1, 1, self.width)
        )
        streams = [jnp.broadcast_to(cls, (batch, 1, self.width)).astype(self.dtype)]
        masks = [jnp.ones((batch, 1), jnp.bool_)]
        for name in present_modalities(features):
            index = table_index(self.modalities or modality_names(), name)
            tokens = nn.Dense(
                self.width,
                kernel_init=nn.with_logical_partitioning(default_kernel_init, (None, "embed")),
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"{name}_projection",
            )(features[name].tokens)
            streams.append(tokens + modality_embedding[index].astype(self.dtype))
            mask = features[name].mask.astype(jnp.bool_)
            if features[name].keep is not None:
                mask = mask & features[name].keep[:, None]
            masks.append(mask)
        x = jnp.concatenate(streams, axis=1)
        mask = jnp.concatenate(masks, axis=1)
        x, out = Encoder(**options(self, EncoderOptions), name="encoder")(x, mask, train=train)
        out.update(tokens=x, mask=mask)
        return x[:, 0], out
