"""Pre-LN transformer: MLP, TransformerBlock, CrossAttentionBlock, and an Encoder that scans
its layers."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import FrozenDict

from mmtx.nn.attention import CrossModalAttention, MultiHeadAttention, default_kernel_init
from mmtx.nn.matmul import dense_dot_general

Dtype = Any

REMAT_POLICIES = {
    "full": None,  # save nothing: recompute the whole block in the backward pass
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}

ACTIVATION_AXES = ("batch", "length", "embed")


def quick_gelu(x: jax.Array) -> jax.Array:
    """OpenAI CLIP's GELU approximation ``x * sigmoid(1.702 x)``, elementwise, dtype kept."""
    return x * jax.nn.sigmoid(1.702 * x)


# The MLP activations by config name (model.<modality>.activation).
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu_tanh": functools.partial(nn.gelu, approximate=True),  # tanh approximation (default)
    "gelu": functools.partial(nn.gelu, approximate=False),  # exact, with erf
    "quick_gelu": quick_gelu,
}


def activation_fn(name: str) -> Callable[[jax.Array], jax.Array]:
    """The activation :data:`ACTIVATIONS` names ``name``; ``ValueError`` for an unknown one."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {tuple(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def layer_norm(
    dtype: Dtype, param_dtype: Dtype, name: str | None = None, epsilon: float = 1e-6
) -> nn.LayerNorm:
    """A LayerNorm (``epsilon`` added to the variance) whose scale and bias carry the logical
    axis ``embed``."""
    return nn.LayerNorm(
        epsilon=epsilon,
        dtype=dtype,
        param_dtype=param_dtype,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
        name=name,
    )


class MLP(nn.Module):
    """Two-layer MLP: ``[B, T, D] -> [B, T, hidden_dim] -> [B, T, D]``, ``activation`` (a name
    in :data:`ACTIVATIONS`; default the tanh GELU) between the layers. Both layers contract
    with :func:`mmtx.nn.matmul.dense_dot_general` (a faster kernel gradient on CPU)."""

    hidden_dim: int
    dropout_rate: float = 0.0
    activation: str = "gelu_tanh"
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
            dot_general=dense_dot_general,
            name="fc1",
        )(x)
        x = activation_fn(self.activation)(x)
        x = nn.with_logical_constraint(x, ("batch", "length", "mlp"))
        x = nn.Dropout(self.dropout_rate)(x, deterministic=self.deterministic)
        return nn.Dense(
            width,
            kernel_init=nn.with_logical_partitioning(default_kernel_init, ("mlp", "embed")),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            dot_general=dense_dot_general,
            name="fc2",
        )(x)


class TransformerBlock(nn.Module):
    """Pre-LN block: ``x + Attn(LN(x))``, then ``x + MLP(LN(x))``.

    ``activation`` names the MLP's activation (:data:`ACTIVATIONS`), ``norm_eps`` is both
    LayerNorms' epsilon, and ``causal`` makes each token attend only to itself and earlier
    ones. The call signature ``(x, mask) -> (x, out)`` is the carry form ``nn.scan`` expects:
    ``out`` is the block's intermediates, ``{}``, or with ``capture_weights``
    ``{"attention_weights": ...}`` in the kernel's layout (see
    :class:`mmtx.nn.MultiHeadAttention`), which ``nn.scan`` stacks over layers.
    """

    num_heads: int
    mlp_dim: int
    dropout_rate: float = 0.0
    attention: str = "dense"
    attention_options: FrozenDict[str, Any] = FrozenDict()
    attention_implementation: str | None = None
    activation: str = "gelu_tanh"
    norm_eps: float = 1e-6
    causal: bool = False
    deterministic: bool = True
    capture_weights: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None) -> tuple[jax.Array, dict[str, Any]]:
        """x: ``[B, T, D]``; mask: bool ``[B, T]`` key-padding (True = real token) or None.

        Returns ``(x [B, T, D] in dtype, out)`` (see the class docstring)."""
        x = nn.with_logical_constraint(x, ACTIVATION_AXES)
        y = layer_norm(self.dtype, self.param_dtype, "norm1", self.norm_eps)(x)
        y, out = MultiHeadAttention(
            num_heads=self.num_heads,
            kernel=self.attention,
            kernel_options=self.attention_options,
            implementation=self.attention_implementation,
            causal=self.causal,
            capture_weights=self.capture_weights,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="attention",
        )(y, mask=mask)
        x = x + nn.Dropout(self.dropout_rate)(y, deterministic=self.deterministic)
        y = layer_norm(self.dtype, self.param_dtype, "norm2", self.norm_eps)(x)
        y = MLP(
            self.mlp_dim,
            dropout_rate=self.dropout_rate,
            activation=self.activation,
            deterministic=self.deterministic,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="mlp",
        )(y)
        x = x + nn.Dropout(self.dropout_rate)(y, deterministic=self.deterministic)
        return nn.with_logical_constraint(x, ACTIVATION_AXES), out


class CrossAttentionBlock(nn.Module):
    """Pre-LN cross-attention block: ``x + CrossAttn(LN(x), LN(context))``, then
    ``x + MLP(LN(x))`` (the co-attention layer of ViLBERT / LXMERT, the cross-attend
    layer of Perceiver).

    Examples whose context is fully masked get no attention update (see
    :class:`mmtx.nn.CrossModalAttention`). Returns ``(x, out)`` like
    :class:`TransformerBlock`; with ``capture_weights`` ``out["attention_weights"]`` is the
    cross-attention's ``[B, H, T, S]``.
    """

    num_heads: int
    mlp_dim: int
    dropout_rate: float = 0.0
    attention: str = "dense"
    attention_options: FrozenDict[str, Any] = FrozenDict()
    attention_implementation: str | None = None
    deterministic: bool = True
    capture_weights: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self, x: jax.Array, context: jax.Array, context_mask: jax.Array | None = None
    ) -> tuple[jax.Array, dict[str, Any]]:
        """x: ``[B, T, D]``; context: ``[B, S, Dc]``; context_mask: bool ``[B, S]`` or None.

        Returns ``(x [B, T, D] in dtype, out)``.
        """
        x = nn.with_logical_constraint(x, ACTIVATION_AXES)
        y, out = CrossModalAttention(
            num_heads=self.num_heads,
            kernel=self.attention,
            kernel_options=self.attention_options,
            implementation=self.attention_implementation,
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
        return nn.with_logical_constraint(x, ACTIVATION_AXES), out


class Encoder(nn.Module):
    """A stack of ``depth`` TransformerBlocks followed by a final LayerNorm ``norm`` (none
    with ``final_norm=False``).

    With ``scan=True`` the blocks are one ``nn.scan`` (params stacked on a leading ``layers``
    axis), so compile time does not grow with depth. ``remat`` names a rematerialisation
    policy from :data:`REMAT_POLICIES` (or ``"none"``) applied to each block. ``activation``,
    ``norm_eps`` (every LayerNorm's epsilon) and ``causal`` are the blocks' (see
    :class:`TransformerBlock`). With ``capture_weights`` the blocks' intermediates come back
    stacked over layers, the same structure scanned or not.
    """

    depth: int
    num_heads: int
    mlp_dim: int
    dropout_rate: float = 0.0
    attention: str = "dense"
    attention_options: FrozenDict[str, Any] = FrozenDict()
    attention_implementation: str | None = None
    activation: str = "gelu_tanh"
    norm_eps: float = 1e-6
    causal: bool = False
    final_norm: bool = True
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
          (``"pre_norm"``: the last block's output before the final LayerNorm; equal to ``x``
          with ``final_norm=False``; with ``capture_weights`` and ``depth > 0``,
          ``"attention_weights"``: every block's, stacked on a leading ``depth`` axis: dense
          float32 ``[depth, B, H, T, T]``, local a :class:`mmtx.attention.LocalWeights` whose
          arrays lead with ``depth``).
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
            attention_implementation=self.attention_implementation,
            activation=self.activation,
            norm_eps=self.norm_eps,
            causal=self.causal,
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
            x, out = stack(**kwargs, name="blocks")(x, mask)
        else:
            per_layer = []
            for i in range(self.depth):
                x, block_out = block(**kwargs, name=f"block_{i}")(x, mask)
                per_layer.append(block_out)
            # Stacked like nn.scan's outputs, so both give one structure.
            out = jax.tree.map(lambda *xs: jnp.stack(xs), *per_layer) if per_layer else {}
        out = {**out, "pre_norm": x}
        if self.final_norm:
            x = layer_norm(self.dtype, self.param_dtype, "norm", self.norm_eps)(x)
        return x, out


class MAPHead(nn.Module):
    """Multi-head attention pooling (Lee et al. 2019; big_vision's ``MAPHead``, SigLIP).

    A learned ``probe`` ``[1, 1, D]`` attends to the tokens (a :class:`MultiHeadAttention`
    named ``attention``, dense kernel), then a residual MLP:
    ``y = attention(probe, x); y = y + mlp(norm(y))``; the result is ``y[:, 0]``.
    ``x`` ``[B, T, D]`` and a bool key-padding ``mask`` ``[B, T]`` (or None) -> ``[B, D]``
    in ``dtype``. Params: ``probe``, ``attention/{query,key,value,out}``, ``norm``,
    ``mlp/{fc1,fc2}``. Returns ``(pooled, out)``; with ``capture_weights``
    ``out["attention_weights"]`` is the probe's float32 ``[B, H, 1, T]``.
    """

    num_heads: int
    mlp_dim: int
    activation: str = "gelu_tanh"
    norm_eps: float = 1e-6
    attention_implementation: str | None = None
    capture_weights: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(
        self, x: jax.Array, mask: jax.Array | None = None
    ) -> tuple[jax.Array, dict[str, Any]]:
        """x: ``[B, T, D]`` float; mask: bool ``[B, T]`` (True = real token) ->
        ``([B, D], out)``."""
        batch, _, width = x.shape
        probe = self.param(
            "probe",
            nn.with_logical_partitioning(nn.initializers.xavier_uniform(), (None, None, "embed")),
            (1, 1, width),
            self.param_dtype,
        )
        probe = jnp.broadcast_to(probe, (batch, 1, width)).astype(self.dtype)
        y, out = MultiHeadAttention(
            num_heads=self.num_heads,
            implementation=self.attention_implementation,
            capture_weights=self.capture_weights,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="attention",
        )(probe, x, mask=mask)
        z = layer_norm(self.dtype, self.param_dtype, "norm", self.norm_eps)(y)
        y = y + MLP(
            self.mlp_dim,
            activation=self.activation,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="mlp",
        )(z)
        return y[:, 0], out
