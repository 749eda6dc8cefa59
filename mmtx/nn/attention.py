"""Multi-head attention with a pluggable kernel (self or cross).

Params carry logical axis names (``embed``, ``heads``, ``kv``) so that one table of rules
shards them over a mesh; without a mesh the names are inert metadata.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import FrozenDict

from mmtx.attention import dot_product_attention, linear_attention, local_attention
from mmtx.attention.splash_local import pallas_interpret_requested, splash_local_attention
from mmtx.nn.matmul import dense_dot
from mmtx.nn.options import options
from mmtx.nn.params import logical_param
from mmtx.nn.platform import target_platform
from mmtx.schemas.tower_options import CROSS_ATTENTION_KERNELS, IMPLEMENTATIONS

Dtype = Any

# A kernel maps (q [B,T,H,Dh], k [B,S,H,Dh], v [B,S,H,Dh], mask) -> [B,T,H,Dh]; with
# return_weights=True -> (out, weights) in the kernel's own layout (or a ValueError).
AttentionKernel = Callable[..., Any]


def _dense(q, k, v, *, mask=None, causal=False, implementation=None, return_weights=False):
    return dot_product_attention(
        q,
        k,
        v,
        mask=mask,
        causal=causal,
        implementation=implementation,
        return_weights=return_weights,
    )


def _key_padding_mask(mask: jax.Array | None, kernel: str) -> jax.Array | None:
    if mask is not None and mask.ndim != 2:
        raise ValueError(f"the {kernel} kernel takes a key-padding mask [B, S]; got {mask.shape}")
    return mask


def _local(
    q, k, v, *, mask=None, causal=False, implementation=None, return_weights=False, radius=64,
    num_global=0,
):  # fmt: skip
    if q.shape[1] != k.shape[1]:
        raise ValueError("the local kernel is for self-attention (queries and keys of one length)")
    options = dict(
        radius=radius,
        num_global=min(num_global, q.shape[1]),
        causal=causal,
        mask=_key_padding_mask(mask, "local"),
    )
    # The fused splash kernel (TPU; interpret mode on request) exposes no probabilities: a
    # capture of the maps runs the blockwise XLA kernel, which computes the same attention.
    if implementation == "pallas" and not return_weights:
        # Per shard of the mesh in context (a Mosaic kernel is not partitioned automatically).
        partition = nn.logical_to_mesh_axes(("batch", "length", "heads", "kv"))
        return splash_local_attention(
            q, k, v, interpret=pallas_interpret_requested(), partition=partition, **options
        )
    return local_attention(q, k, v, return_weights=return_weights, **options)


def _linear(
    q, k, v, *, mask=None, causal=False, implementation=None, return_weights=False,
    feature_map="elu", num_features=0, seed=0,
):  # fmt: skip
    del implementation
    # FAVOR+ uses one fixed draw of random features per seed, so a module is deterministic.
    return linear_attention(
        q,
        k,
        v,
        feature_map=feature_map,
        num_features=num_features or None,
        causal=causal,
        rng=jax.random.key(seed) if feature_map == "favor" else None,
        mask=_key_padding_mask(mask, "linear"),
        return_weights=return_weights,
    )


# Kernel name -> function, one per name of mmtx.schemas.tower_options.KERNELS (the names, with
# CROSS_ATTENTION_KERNELS and IMPLEMENTATIONS, are data declared with the config's options);
# options come from config.attention.<name> (see mmtx.config).
ATTENTION_KERNELS: dict[str, AttentionKernel] = {
    "dense": _dense,
    "local": _local,
    "linear": _linear,
}

default_kernel_init = nn.initializers.xavier_uniform()

CUDNN_DTYPES = ("bfloat16", "float16")

_logger = logging.getLogger(__name__)


def _cudnn_max_head_dim() -> int:
    # jax's own rule (jax._src.cudnn.fused_attention_stablehlo.check_is_flash_attention):
    # head_dim <= 256 on Hopper or later, <= 128 before, and a multiple of 8.
    try:
        from jax._src.cudnn.fused_attention_stablehlo import check_compute_capability

        return 256 if check_compute_capability("9.0") else 128
    except Exception:
        return 128


def cudnn_unsupported_reason(
    *,
    kernel: str = "dense",
    dtype: Any = None,
    head_dim: int | None = None,
    backend: str | None = None,
    lengths: tuple[int, int] | None = None,
    masked: bool = False,
) -> str | None:
    """Why cuDNN flash attention cannot run here, or ``None`` when it can.

    Checks the backend (GPU only; ``None``: the platform compiled for,
    :func:`mmtx.nn.platform.target_platform`), the kernel (dense only), the compute dtype
    (bf16/fp16) and the head dim (jax's flash-attention rule) and, with a mask (which jax
    hands cuDNN as a bias), that the query and key ``lengths`` are even (cuDNN's backward
    pass needs that), in that order; arguments left ``None`` are not checked.
    """
    backend = backend or target_platform()
    if backend != "gpu":
        return f"cuDNN flash attention needs a GPU backend; jax's backend is {backend!r}"
    if kernel != "dense":
        return f"cuDNN flash attention runs only the dense kernel; got {kernel!r}"
    if dtype is not None and jnp.dtype(dtype).name not in CUDNN_DTYPES:
        name = jnp.dtype(dtype).name
        return f"cuDNN flash attention needs a bfloat16/float16 compute dtype; got {name}"
    if head_dim is not None:
        max_dim = _cudnn_max_head_dim()
        if not (head_dim <= max_dim and head_dim % 8 == 0):
            return (
                f"cuDNN flash attention needs head_dim <= {max_dim} and a multiple of 8; "
                f"got {head_dim}"
            )
    if masked and lengths is not None and (lengths[0] % 2 or lengths[1] % 2):
        return (
            "cuDNN flash attention with a mask needs even query and key lengths (its backward "
            f"pass); got {lengths[0]} and {lengths[1]}"
        )
    return None


def pallas_unsupported_reason(*, kernel: str = "local", backend: str | None = None) -> str | None:
    """Why the Pallas splash kernel cannot run here, or ``None`` when it can.

    It runs only the local kernel (:func:`mmtx.attention.splash_local_attention`), on a TPU
    backend (``None``: the platform compiled for, :func:`mmtx.nn.platform.target_platform`),
    or on any backend in interpret mode when ``MMTX_PALLAS_INTERPRET=1`` is set.
    """
    if kernel != "local":
        return f"the Pallas splash kernel runs only the local kernel; got {kernel!r}"
    backend = backend or target_platform()
    if backend != "tpu" and not pallas_interpret_requested():
        return (
            f"the Pallas splash kernel needs a TPU backend; jax's backend is {backend!r} "
            "(set MMTX_PALLAS_INTERPRET=1 to run it in interpret mode, slowly)"
        )
    return None


@functools.cache
def _log_fallback(reason: str) -> None:
    _logger.warning("attention implementation auto: using XLA, not cuDNN (%s)", reason)


@functools.cache
def _log_local_fallback(reason: str) -> None:
    _logger.info("attention implementation auto: using XLA, not Pallas (%s)", reason)


def resolve_implementation(
    implementation: str | None,
    *,
    kernel: str,
    dtype: Any,
    head_dim: int,
    lengths: tuple[int, int] | None = None,
    masked: bool = False,
) -> str | None:
    """The ``implementation`` that ``jax.nn.dot_product_attention`` gets.

    ``None`` stays ``None`` (jax's default, XLA). ``"xla"`` is XLA. ``"auto"`` is ``None`` off
    GPU (silently; bit-identical to ``"xla"``), ``"cudnn"`` on a GPU when the kernel, dtype
    and head dim allow it, else XLA with one logged line per reason. ``"cudnn"`` raises
    ``ValueError`` with the reason when cuDNN cannot run (at trace time, before compile).
    For the local kernel ``"auto"`` is ``"pallas"`` on a TPU, else ``None`` with one logged
    (INFO) line; ``"pallas"`` raises ``ValueError`` with the reason when the splash kernel
    cannot run (:func:`pallas_unsupported_reason`). "On a GPU/TPU" means compiling for one
    (:func:`mmtx.nn.platform.target_platform`: the mesh's platform inside the steps of
    :func:`mmtx.train.build.build`, else jax's backend).
    """
    if implementation is None or implementation == "xla":
        return implementation
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"unknown attention implementation {implementation!r}; choose one of {IMPLEMENTATIONS}"
        )
    if implementation == "pallas" or (implementation == "auto" and kernel == "local"):
        reason = pallas_unsupported_reason(kernel=kernel)
        if implementation == "auto" and target_platform() != "tpu":
            reason = reason or f"jax's backend is {target_platform()!r}, not 'tpu'"
        if reason is None:
            return "pallas"
        if implementation == "pallas":
            raise ValueError(f"attention implementation 'pallas' cannot run: {reason}")
        _log_local_fallback(reason)
        return None
    if implementation == "auto" and (target_platform() != "gpu" or kernel != "dense"):
        return None  # Off GPU, or a kernel that does not call jax's dense attention.
    reason = cudnn_unsupported_reason(
        kernel=kernel, dtype=dtype, head_dim=head_dim, lengths=lengths, masked=masked
    )
    if reason is None:
        return "cudnn"
    if implementation == "cudnn":
        raise ValueError(f"attention implementation 'cudnn' cannot run: {reason}")
    _log_fallback(reason)
    return "xla"


class FactoredDense(nn.Module):
    """``[..., *in_shape] -> [..., *out_shape]``: a dense projection with a factored kernel,
    the projections into heads and out of them.

    ``in_shape`` is the input's last ``len(axes) - len(out_shape)`` axes. Kernel
    ``[*in_shape, *out_shape]`` with logical ``axes`` (one name per kernel dimension: the
    input's, then the output's; Xavier uniform over those two groups), bias ``[*out_shape]``
    with the output's names. Written out rather than with ``nn.DenseGeneral``, whose init
    reshapes a flat kernel: under a logical-axis-rules context that reshape would constrain a
    2-D array with the factored axis names. The contraction is
    :func:`mmtx.nn.matmul.dense_dot` on the kernel viewed as ``[prod(in_shape),
    prod(out_shape)]`` (a faster kernel gradient on CPU). Into heads: ``out_shape=(H, Dh)``,
    axes ``embed, heads, kv`` (one input axis); out of them: ``out_shape=(features,)``, axes
    ``heads, kv, embed`` (two). Output in ``dtype``.
    """

    out_shape: tuple[int, ...]
    axes: tuple[str | None, ...]
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: ``[..., *in_shape]`` float -> ``[..., *out_shape]`` in ``dtype``."""
        out_shape = tuple(self.out_shape)
        in_dims = len(self.axes) - len(out_shape)
        in_shape = x.shape[x.ndim - in_dims :]
        inputs = tuple(range(in_dims))
        outputs = tuple(range(in_dims, in_dims + len(out_shape)))
        init = nn.initializers.xavier_uniform(in_axis=inputs, out_axis=outputs)
        kernel = logical_param(self, "kernel", init, self.axes, (*in_shape, *out_shape))
        bias = logical_param(self, "bias", nn.initializers.zeros, self.axes[in_dims:], out_shape)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        fan_in, fan_out = math.prod(in_shape), math.prod(out_shape)
        flat = x.reshape(*x.shape[: x.ndim - in_dims], fan_in)
        y = dense_dot(flat, kernel.reshape(fan_in, fan_out))
        return y.reshape(*y.shape[:-1], *out_shape) + bias


class AttentionOptions(nn.Module, kw_only=True):
    """The options of one multi-head attention, declared here once (keyword-only):
    :class:`MultiHeadAttention` and :class:`CrossModalAttention` are these options, and the
    latter hands them on whole (:func:`mmtx.nn.options.options`) to the former.

    Attributes:
      num_heads: number of heads H; the (query) width must be divisible by it.
      kernel: name of the attention kernel in :data:`ATTENTION_KERNELS`.
      kernel_options: keyword options of that kernel (``local``: ``radius``, ``num_global``;
        ``linear``: ``feature_map``, ``num_features``, ``seed``).
      implementation: ``None`` (jax's default), ``"xla"``, ``"cudnn"`` (flash on GPU; a
        ``ValueError`` when it cannot run), ``"pallas"`` (the local kernel as a fused splash
        kernel on TPU; a ``ValueError`` when it cannot run) or ``"auto"`` (cuDNN or Pallas
        where it can run, else XLA); resolved by :func:`resolve_implementation` and passed to
        the kernel (config: ``config.attention.implementation``).
      capture_weights: also return the probabilities the kernel applied, as
        ``out["attention_weights"]`` (see each module).
      dtype: the computation dtype (outputs are in it).
      param_dtype: the params' dtype.
    """

    num_heads: int
    kernel: str = "dense"
    kernel_options: FrozenDict[str, Any] = FrozenDict()
    implementation: str | None = None
    capture_weights: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32


class MultiHeadAttention(AttentionOptions):
    """Multi-head attention: self-attention, or cross-attention when ``context`` is given.

    Its options are :class:`AttentionOptions` (keyword-only) and these.

    Attributes:
      out_features: output width (default: the input width).
      causal: mask keys after each query (self-attention only).
      capture_weights: (an :class:`AttentionOptions` option) also return the probabilities
        the kernel applied, as ``out["attention_weights"]``: dense ``[B, H, T, S]`` float32
        (computed on the explicit XLA path, since cuDNN flash attention does not expose
        them: see :func:`mmtx.attention.dot_product_attention`); local a
        :class:`mmtx.attention.LocalWeights` band (``mmtx.attention.local_weights_to_dense``
        makes it ``[B, H, T, T]``; with ``"pallas"`` the blockwise XLA kernel runs instead, as
        the splash kernel exposes none); linear raises ``ValueError`` (it forms no attention
        map). Capture does not change the output beyond float round-off.
    """

    out_features: int | None = None
    causal: bool = False

    @nn.compact
    def __call__(
        self, x: jax.Array, context: jax.Array | None = None, *, mask: jax.Array | None = None
    ) -> tuple[jax.Array, dict[str, Any]]:
        """Attends from ``x`` to ``context`` (or to ``x`` itself).

        Args:
          x: ``[B, T, D]`` queries' input.
          context: ``[B, S, Dc]`` keys' and values' input; ``None`` means ``x``.
          mask: bool, ``True`` = attend; a key-padding mask ``[B, S]`` or broadcastable to
            ``[B, H, T, S]``.

        Returns:
          ``(y, out)``: ``y`` ``[B, T, out_features or D]`` in ``dtype``; ``out`` is ``{}``, or
          ``{"attention_weights": weights}`` with ``capture_weights`` (see the attributes).
        """
        if self.kernel not in ATTENTION_KERNELS:
            raise ValueError(
                f"unknown attention kernel {self.kernel!r}; "
                f"choose one of {sorted(ATTENTION_KERNELS)}"
            )
        context = x if context is None else context
        width = x.shape[-1]
        if width % self.num_heads:
            raise ValueError(f"width {width} is not divisible by num_heads {self.num_heads}")
        head_dim = width // self.num_heads

        def projection(name: str) -> FactoredDense:
            return FactoredDense(
                (self.num_heads, head_dim),
                ("embed", "heads", "kv"),
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=name,
            )

        implementation = resolve_implementation(
            self.implementation,
            kernel=self.kernel,
            dtype=self.dtype,
            head_dim=head_dim,
            lengths=(x.shape[1], context.shape[1]),
            masked=mask is not None,
        )
        q = projection("query")(x)
        k = projection("key")(context)
        v = projection("value")(context)
        y = ATTENTION_KERNELS[self.kernel](
            q,
            k,
            v,
            mask=mask,
            causal=self.causal,
            implementation=implementation,
            return_weights=self.capture_weights,
            **self.kernel_options,
        )
        out: dict[str, Any] = {}
        if self.capture_weights:
            y, out["attention_weights"] = y
        y = FactoredDense(
            (self.out_features or width,),
            ("heads", "kv", "embed"),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="out",
        )(y)
        return y, out


class CrossModalAttention(AttentionOptions):
    """Queries from one modality attend to the tokens of another (or several others).

    A :class:`MultiHeadAttention` whose keys and values come from ``context`` under the
    context's own padding mask. An example with no visible context token (the other
    modality is missing or dropped for it) gets a zero output, so that a residual
    ``x + CrossModalAttention(...)(x, context, mask)`` leaves ``x`` unchanged rather than
    mixing in padding.

    Its options are :class:`AttentionOptions` (keyword-only), with these meanings here:

    Attributes:
      kernel: ``"dense"`` or ``"linear"`` (see :data:`CROSS_ATTENTION_KERNELS`; the local
        kernel needs queries and keys of one sequence).
      capture_weights: also return the softmax probabilities ``[B, H, T, S]`` (dense kernel;
        linear raises ``ValueError``) as ``out["attention_weights"]``, e.g. which image patch
        a word attends to. Rows of examples with no visible context token are zero (their
        output is zero, not a softmax).
    """

    @nn.compact
    def __call__(
        self, x: jax.Array, context: jax.Array, context_mask: jax.Array | None = None
    ) -> tuple[jax.Array, dict[str, Any]]:
        """Attends from ``x`` to ``context``.

        Args:
          x: ``[B, T, D]`` float, the querying modality's tokens.
          context: ``[B, S, Dc]`` float, the attended modality's tokens.
          context_mask: bool ``[B, S]``, True = real context token; None = all real.

        Returns:
          ``(y, out)``: ``y`` ``[B, T, D]`` in ``dtype``, rows of examples whose context is
          fully masked are zero; ``out`` as :class:`MultiHeadAttention`'s.
        """
        if self.kernel not in CROSS_ATTENTION_KERNELS:
            raise ValueError(
                f"cross-modal attention supports the kernels {CROSS_ATTENTION_KERNELS}; "
                f"got {self.kernel!r}"
            )
        chex.assert_rank([x, context], 3)
        chex.assert_equal_shape_prefix([x, context], 1)
        if context_mask is not None:
            chex.assert_shape(context_mask, context.shape[:2])
        y, out = MultiHeadAttention(**options(self, AttentionOptions), name="attention")(
            x, context, mask=context_mask
        )
        if context_mask is None:
            return y, out
        has_context = jnp.any(context_mask, axis=1)
        if "attention_weights" in out:
            weights = out["attention_weights"]
            out["attention_weights"] = jnp.where(has_context[:, None, None, None], weights, 0.0)
        return jnp.where(has_context[:, None, None], y, jnp.zeros_like(y)), out
