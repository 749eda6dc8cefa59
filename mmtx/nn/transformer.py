"""Pre-LN transformer: MLP, TransformerBlock, CrossAttentionBlock, and an Encoder that scans
its layers; the options they are built from, each declared once (:class:`BlockOptions`,
:class:`StackOptions`, :class:`EncoderOptions`)."""

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
from mmtx.nn.options import options
from mmtx.nn.params import logical_param

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


class BlockOptions(nn.Module, kw_only=True):
    """The options of one transformer block, declared here once (keyword-only).

    :class:`TransformerBlock` and :class:`CrossAttentionBlock` are these options; every module
    that builds blocks inherits them (through :class:`StackOptions`: :class:`Encoder`,
    :class:`mmtx.encoders.Tower`, the encoders, the fusions), so it takes them as keywords and
    hands them on whole with :func:`options`, never one by one.

    Attributes:
      num_heads: attention heads (the width must divide by it).
      mlp_dim: hidden width of the MLP.
      dropout_rate: dropout after the attention and in and after the MLP (``train`` only).
      attention: the self-attention kernel (:data:`mmtx.nn.ATTENTION_KERNELS`; a cross-attention
        block's: :data:`mmtx.nn.CROSS_ATTENTION_KERNELS`).
      attention_options: the kernel's options (``config.attention.<kernel>``; dense: none).
      attention_implementation: ``auto`` | ``xla`` | ``cudnn`` | ``pallas`` or None, resolved per
        layer (:func:`mmtx.nn.resolve_implementation`).
      activation: the MLP's activation, a name in :data:`ACTIVATIONS`.
      norm_eps: every LayerNorm's epsilon.
      causal: each token attends only to itself and earlier ones (self-attention only).
      capture_weights: also return the attention probabilities (see each module).
      dtype: the computation dtype (outputs are in it).
      param_dtype: the params' dtype.
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
    capture_weights: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32


class StackOptions(BlockOptions, kw_only=True):
    """:class:`BlockOptions` plus ``depth``, the number of blocks, and ``remat``, the
    rematerialisation policy of each (a name in :data:`REMAT_POLICIES` or ``"none"``)."""

    depth: int
    remat: str = "none"


class EncoderOptions(StackOptions, kw_only=True):
    """:class:`StackOptions` plus ``scan`` (the blocks are one ``nn.scan``, params stacked on a
    leading ``layers`` axis) and ``final_norm`` (a LayerNorm ``norm`` after the last block):
    the options of :class:`Encoder`."""

    scan: bool = True
    final_norm: bool = True


def remat_block(block: type[nn.Module], remat: str, *, prevent_cse: bool = True) -> type[nn.Module]:
    """``block`` wrapped in the rematerialisation policy :data:`REMAT_POLICIES` names
    ``remat`` (``"none"``: unchanged; ``ValueError`` for an unknown name)."""
    if remat == "none":
        return block
    if remat not in REMAT_POLICIES:
        raise ValueError(f"unknown remat policy {remat!r}; choose none or {sorted(REMAT_POLICIES)}")
    return nn.remat(block, policy=REMAT_POLICIES[remat], prevent_cse=prevent_cse)


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


class _PreLNBlock(BlockOptions):
    """What the two pre-LN blocks share: :class:`BlockOptions`, ``deterministic`` (dropout
    off), the attention's keywords and the second half, ``x + MLP(LN(x))``."""

    deterministic: bool = True

    def _attention_kwargs(self) -> dict[str, Any]:
        """The keywords of the block's attention module (its kernel, heads and dtypes)."""
        return dict(
            num_heads=self.num_heads,
            kernel=self.attention,
            kernel_options=self.attention_options,
            implementation=self.attention_implementation,
            capture_weights=self.capture_weights,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )

    def _mlp_half(self, x: jax.Array, y: jax.Array) -> jax.Array:
        """``x + dropout(y)`` (``y`` the attention's update), then ``+ dropout(MLP(norm2(.)))``:
        ``[B, T, D]`` in ``dtype``. Called from the block's compact ``__call__``."""
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
        return nn.with_logical_constraint(x, ACTIVATION_AXES)


class TransformerBlock(_PreLNBlock):
    """Pre-LN block: ``x + Attn(LN(x))``, then ``x + MLP(LN(x))``.

    Its options are :class:`BlockOptions` (``activation`` the MLP's, ``norm_eps`` both
    LayerNorms' epsilon, ``causal`` each token attending only to itself and earlier ones);
    ``deterministic`` turns dropout off. The call signature ``(x, mask) -> (x, out)`` is the
    carry form ``nn.scan`` expects: ``out`` is the block's intermediates, ``{}``, or with
    ``capture_weights`` ``{"attention_weights": ...}`` in the kernel's layout (see
    :class:`mmtx.nn.MultiHeadAttention`), which ``nn.scan`` stacks over layers.
    """

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None) -> tuple[jax.Array, dict[str, Any]]:
        """x: ``[B, T, D]``; mask: bool ``[B, T]`` key-padding (True = real token) or None.

        Returns ``(x [B, T, D] in dtype, out)`` (see the class docstring)."""
        x = nn.with_logical_constraint(x, ACTIVATION_AXES)
        y = layer_norm(self.dtype, self.param_dtype, "norm1", self.norm_eps)(x)
        attention = MultiHeadAttention(
            **self._attention_kwargs(), causal=self.causal, name="attention"
        )
        y, out = attention(y, mask=mask)
        return self._mlp_half(x, y), out


class CrossAttentionBlock(_PreLNBlock):
    """Pre-LN cross-attention block: ``x + CrossAttn(LN(x), LN(context))``, then
    ``x + MLP(LN(x))`` (the co-attention layer of ViLBERT / LXMERT, the cross-attend
    layer of Perceiver).

    Its options are :class:`BlockOptions` (``attention``: a cross-attention kernel;
    ``causal`` does not apply to cross-attention: ``ValueError``); ``deterministic`` turns
    dropout off. Examples whose context is fully masked get no attention update (see
    :class:`mmtx.nn.CrossModalAttention`). Returns ``(x, out)`` like
    :class:`TransformerBlock`; with ``capture_weights`` ``out["attention_weights"]`` is the
    cross-attention's ``[B, H, T, S]``.
    """

    @nn.compact
    def __call__(
        self, x: jax.Array, context: jax.Array, context_mask: jax.Array | None = None
    ) -> tuple[jax.Array, dict[str, Any]]:
        """x: ``[B, T, D]``; context: ``[B, S, Dc]``; context_mask: bool ``[B, S]`` or None.

        Returns ``(x [B, T, D] in dtype, out)``.
        """
        if self.causal:
            raise ValueError("causal does not apply to cross-attention (x and context are apart)")
        x = nn.with_logical_constraint(x, ACTIVATION_AXES)
        y, out = CrossModalAttention(**self._attention_kwargs(), name="cross_attention")(
            layer_norm(self.dtype, self.param_dtype, "norm1", self.norm_eps)(x),
            layer_norm(self.dtype, self.param_dtype, "context_norm", self.norm_eps)(context),
            context_mask,
        )
        return self._mlp_half(x, y), out


class Encoder(EncoderOptions):
    """A stack of ``depth`` TransformerBlocks followed by a final LayerNorm ``norm`` (none
    with ``final_norm=False``).

    Its options are :class:`EncoderOptions`; the blocks get its :class:`BlockOptions`
    (``norm_eps`` is every LayerNorm's epsilon, the final one's too). With ``scan=True`` the
    blocks are one ``nn.scan`` (params stacked on a leading ``layers`` axis), so compile time
    does not grow with depth. ``remat`` names a rematerialisation policy from
    :data:`REMAT_POLICIES` (or ``"none"``) applied to each block. With ``capture_weights`` the
    blocks' intermediates come back stacked over layers, the same structure scanned or not.
    """

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
        block = remat_block(TransformerBlock, self.remat, prevent_cse=not self.scan)
        kwargs = dict(options(self, BlockOptions), deterministic=not train)
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
        probe = logical_param(
            self, "probe", nn.initializers.xavier_uniform(), (None, None, "embed"), (1, 1, width)
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
