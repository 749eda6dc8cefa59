"""Pre-LN transformer: MLP, TransformerBlock, CrossAttentionBlock, and an Encoder that scans
its layers."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import FrozenDict

from mmtx.nn.attention import CrossModalAttention, MultiHeadAttention, default_kernel_init

Dtype = Any

REMAT_POLICIES = {
    "full": None,  # save nothing: recompute the whole block in the backward pass
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}

ACTIVATION_AXES = ("batch", "length", "embed")


def layer_norm(dtype: Dtype, param_dtype: Dtype, name: str | None = None) -> nn.LayerNorm:
    """A LayerNorm whose scale and bias carry the logical axis ``embed``."""
    return nn.LayerNorm(
        dtype=dtype,
        param_dtype=param_dtype,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
        name=name,
    )


class MLP(nn.Module):
    """Two-layer GELU MLP: ``[B, T, D] -> [B, T, hidden_dim] -> [B, T, D]``."""

    hidden_dim: int
    dropout_rate: float = 0.0
    deterministic: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: ``[B, T, D]`` float -> ``[B, T, D]`` in ``dtype``."""
        width = x.shape[-1]
        x = nn.Dense(
            self.hidden_dim,
            kernel_init=nn.with_logical_partitioning(default_kernel_init, ("embed", "mlp")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="fc1",
        )(x)
        x = nn.gelu(x)
        x = nn.with_logical_constraint(x, ("batch", "length", "mlp"))
        x = nn.Dropout(self.dropout_rate)(x, deterministic=self.deterministic)
        return nn.Dense(
            width,
            kernel_init=nn.with_logical_partitioning(default_kernel_init, ("mlp", "embed")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="fc2",
        )(x)


class TransformerBlock(nn.Module):
    """Pre-LN block: ``x + Attn(LN(x))``, then ``x + MLP(LN(x))``.

    The call signature ``(x, mask) -> (x, None)`` is the carry form ``nn.scan`` expects.
    """

    num_heads: int
    mlp_dim: int
    dropout_rate: float = 0.0
    attention: str = "dense"
    attention_options: FrozenDict[str, Any] = FrozenDict()
    deterministic: bool = True
    capture_weights: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None) -> tuple[jax.Array, None]:
        """x: ``[B, T, D]``; mask: bool ``[B, T]`` key-padding (True = real token) or None."""
        x = nn.with_logical_constraint(x, ACTIVATION_AXES)
        y = layer_norm(self.dtype, self.param_dtype, "norm1")(x)
        y = MultiHeadAttention(
            num_heads=self.num_heads,
            kernel=self.attention,
            kernel_options=self.attention_options,
            capture_weights=self.capture_weights,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="attention",
        )(y, mask=mask)
        x = x + nn.Dropout(self.dropout_rate)(y, deterministic=self.deterministic)
        y = layer_norm(self.dtype, self.param_dtype, "norm2")(x)
        y = MLP(
            self.mlp_dim,
            dropout_rate=self.dropout_rate,
            deterministic=self.deterministic,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="mlp",
        )(y)
        x = x + nn.Dropout(self.dropout_rate)(y, deterministic=self.deterministic)
        return nn.with_logical_constraint(x, ACTIVATION_AXES), None


class CrossAttentionBlock(nn.Module):
    """Pre-LN cross-attention block: ``x + CrossAttn(LN(x), LN(context))``, then
    ``x + MLP(LN(x))`` (the co-attention layer of ViLBERT / LXMERT, the cross-attend
    layer of Perceiver).

    Examples whose context is fully masked get no attention update (see
    :class:`mmtx.nn.CrossModalAttention`).
    """

    num_heads: int
    mlp_dim: int
    dropout_rate: float = 0.0
    attention: str = "dense"
    attention_options: FrozenDict[str, Any] = FrozenDict()
    deterministic: bool = True
    capture_weights: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self, x: jax.Array, context: jax.Array, context_mask: jax.Array | None = None
    ) -> jax.Array:
        """x: ``[B, T, D]``; context: ``[B, S, Dc]``; context_mask: bool ``[B, S]`` or None.

        Returns ``[B, T, D]`` in ``dtype``.
        """
        x = nn.with_logical_constraint(x, ACTIVATION_AXES)
        y = CrossModalAttention(
            num_heads=self.num_heads,
            kernel=self.attention,
            kernel_options=self.attention_options,
            capture_weights=self.capture_weights,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="cross_attention",
        )(
            layer_norm(self.dtype, self.param_dtype, "norm1")(x),
            layer_norm(self.dtype, self.param_dtype, "context_norm")(context),
            context_mask,
        )
        x = x + nn.Dropout(self.dropout_rate)(y, deterministic=self.deterministic)
        y = layer_norm(self.dtype, self.param_dtype, "norm2")(x)
        y = MLP(
            self.mlp_dim,
            dropout_rate=self.dropout_rate,
            deterministic=self.deterministic,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="mlp",
        )(y)
        x = x + nn.Dropout(self.dropout_rate)(y, deterministic=self.deterministic)
        return nn.with_logical_constraint(x, ACTIVATION_AXES)


class Encoder(nn.Module):
    """A stack of ``depth`` TransformerBlocks followed by a final LayerNorm.

    With ``scan=True`` the blocks are one ``nn.scan`` (params stacked on a leading ``layers``
    axis), so compile time does not grow with depth. ``remat`` names a rematerialisation
    policy from :data:`REMAT_POLICIES` (or ``"none"``) applied to each block.
    """

    depth: int
    num_heads: int
    mlp_dim: int
    dropout_rate: float = 0.0
    attention: str = "dense"
    attention_options: FrozenDict[str, Any] = FrozenDict()
    remat: str = "none"
    scan: bool = True
    capture_weights: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self, x: jax.Array, mask: jax.Array | None = None, *, train: bool = False
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Encodes a token stream.

        Args:
          x: ``[B, T, D]`` float tokens.
          mask: bool ``[B, T]``, True for real tokens; padded tokens are never attended to.
          train: enables dropout.

        Returns:
          ``(x, out)``: encoded ``[B, T, D]`` in ``dtype`` and a dict of intermediates
          (``"pre_norm"``: the last block's output before the final LayerNorm).
        """
        block = TransformerBlock
        if self.remat != "none":
            if self.remat not in REMAT_POLICIES:
                raise ValueError(f"unknown remat policy {self.remat!r}")
            block = nn.remat(block, policy=REMAT_POLICIES[self.remat], prevent_cse=not self.scan)
        kwargs = dict(
            num_heads=self.num_heads,
            mlp_dim=self.mlp_dim,
            dropout_rate=self.dropout_rate,
            attention=self.attention,
            attention_options=self.attention_options,
            deterministic=not train,
            capture_weights=self.capture_weights,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        x = x.astype(self.dtype)
        if self.scan and self.depth > 0:
            stack = nn.scan(
                block,
                variable_axes={"params": 0, "intermediates": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=nn.broadcast,
                length=self.depth,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )
            x, _ = stack(**kwargs, name="blocks")(x, mask)
        else:
            for i in range(self.depth):
                x, _ = block(**kwargs, name=f"block_{i}")(x, mask)
        out = {"pre_norm": x}
        x = layer_norm(self.dtype, self.param_dtype, "norm")(x)
        return x, out
