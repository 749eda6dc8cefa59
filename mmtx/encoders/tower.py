"""The part every encoder shares: optional CLS token, transformer stack, pooling."""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import FrozenDict

from mmtx.nn import Encoder

Dtype = Any


def masked_mean(x: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Mean over axis 1 of ``[B, T, D]`` counting only ``mask`` ``[B, T]`` positions -> ``[B, D]``.

    A row with no valid token pools to zeros.
    """
    if mask is None:
        return jnp.mean(x, axis=1)
    weights = mask.astype(x.dtype)[..., None]
    return jnp.sum(x * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1)


class Tower(nn.Module):
    """CLS token (if ``pooling == "cls"``) + :class:`mmtx.nn.Encoder` + pooling.

    ``[B, T, D]`` embedded tokens and a bool ``[B, T]`` mask in; ``(tokens [B, T', D], out)``
    out, where ``T' = T + 1`` with a CLS token and ``out`` has ``"pooled"`` ``[B, D]`` and
    ``"mask"`` ``[B, T']``.
    """

    depth: int
    num_heads: int
    mlp_dim: int
    pooling: str = "cls"
    dropout_rate: float = 0.0
    attention: str = "dense"
    attention_options: FrozenDict[str, Any] = FrozenDict()
    remat: str = "none"
    scan: bool = True
    capture_weights: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @classmethod
    def of(cls, encoder: nn.Module) -> Tower:
        """The tower named ``"tower"`` configured by ``encoder``'s fields of the same names.

        Every encoder declares the tower's fields (depth, heads, attention, ...); call this in
        the encoder's ``nn.compact`` method so the tower becomes its child.
        """
        names = [f.name for f in dataclasses.fields(cls) if f.name not in ("parent", "name")]
        return cls(**{name: getattr(encoder, name) for name in names}, name="tower")

    @nn.compact
    def __call__(
        self, x: jax.Array, mask: jax.Array | None = None, *, train: bool = False
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """See the class docstring; ``train`` enables dropout."""
        batch, length, width = x.shape
        if mask is None:
            mask = jnp.ones((batch, length), dtype=jnp.bool_)
        if self.pooling == "cls":
            cls = self.param(
                "cls",
                nn.with_logical_partitioning(nn.initializers.zeros, (None, None, "embed")),
                (1, 1, width),
                self.param_dtype,
            )
            x = jnp.concatenate([jnp.broadcast_to(cls, (batch, 1, width)).astype(x.dtype), x], 1)
            mask = jnp.concatenate([jnp.ones((batch, 1), dtype=jnp.bool_), mask], axis=1)
        x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
        x, out = Encoder(
            depth=self.depth,
            num_heads=self.num_heads,
            mlp_dim=self.mlp_dim,
            dropout_rate=self.dropout_rate,
            attention=self.attention,
            attention_options=self.attention_options,
            remat=self.remat,
            scan=self.scan,
            capture_weights=self.capture_weights,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="encoder",
        )(x, mask, train=train)
        if self.pooling == "cls":
            pooled = x[:, 0]
        elif self.pooling == "mean":
            pooled = masked_mean(x, mask)
        else:
            raise ValueError(f"unknown pooling {self.pooling!r}; use 'cls' or 'mean'")
        out.update(encoded=x, pooled=pooled, mask=mask)
        return x, out
