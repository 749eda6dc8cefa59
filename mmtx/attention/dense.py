"""Dense (full softmax) attention.

A thin wrapper over :func:`jax.nn.dot_product_attention`, so that on GPU the cuDNN flash
kernel is used when ``implementation="cudnn"`` is asked for, and on TPU/CPU XLA's fused
attention. :func:`attention_weights` computes the same softmax explicitly;
``dot_product_attention(..., return_weights=True)`` applies those explicit probabilities and
returns them with the output (for visualisation).
"""

from __future__ import annotations

from typing import Literal

import chex
import jax
import jax.numpy as jnp

Implementation = Literal["xla", "cudnn"] | None


def _check_qkv(q: jax.Array, k: jax.Array, v: jax.Array) -> None:
    chex.assert_rank([q, k, v], 4)
    chex.assert_equal_shape([k, v])
    chex.assert_equal_shape_prefix([q, k], 1)
    if q.shape[2] != k.shape[2] or q.shape[3] != k.shape[3]:
        raise ValueError(
            f"q {q.shape} and k {k.shape} must agree on heads and head_dim "
            "(layout [batch, length, heads, head_dim])."
        )


def _as_4d_mask(mask: jax.Array | None) -> jax.Array | None:
    """Broadcasts a key-padding mask ``[B, S]`` to ``[B, 1, 1, S]``; passes 4-D masks through."""
    if mask is None:
        return None
    mask = jnp.asarray(mask, dtype=jnp.bool_)
    if mask.ndim == 2:
        return mask[:, None, None, :]
    if mask.ndim != 4:
        raise ValueError(f"mask must be [B, S] or broadcastable [B, H, T, S]; got {mask.shape}")
    return mask


def dot_product_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    mask: jax.Array | None = None,
    bias: jax.Array | None = None,
    causal: bool = False,
    implementation: Implementation = None,
    return_weights: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """Softmax attention ``softmax(q k^T / sqrt(Dh) + bias, masked) v``.

    Args:
      q: ``[B, T, H, Dh]`` float queries.
      k: ``[B, S, H, Dh]`` float keys.
      v: ``[B, S, H, Dh]`` float values.
      mask: bool, ``True`` = attend. Either a key-padding mask ``[B, S]`` or any array
        broadcastable to ``[B, H, T, S]``.
      bias: float, broadcastable to ``[B, H, T, S]``; added to the logits.
      causal: if True, query ``i`` sees only keys ``j <= i``.
      implementation: ``None`` (let JAX choose), ``"xla"`` or ``"cudnn"`` (GPU flash attention).
      return_weights: also return the softmax probabilities. ``jax.nn.dot_product_attention``
        (XLA's fused attention, cuDNN flash) does not expose them, so then the attention is
        computed on the explicit XLA path instead, whatever ``implementation`` says: the
        probabilities of :func:`attention_weights` (float32) times ``v``. Its output equals
        the fused one to float round-off; its memory is ``O(B H T S)``.

    Returns:
      ``[B, T, H, Dh]`` in the dtype of ``q``. The softmax is computed in float32.
      A query row whose keys are all masked returns the mean of ``v`` (no NaNs).
      With ``return_weights``: ``(out, weights)``, ``weights`` float32 ``[B, H, T, S]``,
      the probabilities ``out`` was computed with (each row sums to one over the keys;
      masked keys get exactly zero, a fully masked row is uniform).
    """
    _check_qkv(q, k, v)
    if return_weights:
        weights = attention_weights(q, k, mask=mask, bias=bias, causal=causal)
        out = jnp.einsum("bhts,bshd->bthd", weights, v.astype(jnp.float32))
        return out.astype(q.dtype), weights
    return jax.nn.dot_product_attention(
        q,
        k,
        v,
        bias=bias,
        mask=_as_4d_mask(mask),
        is_causal=causal,
        implementation=implementation,
    )


def attention_weights(
    q: jax.Array,
    k: jax.Array,
    *,
    mask: jax.Array | None = None,
    bias: jax.Array | None = None,
    causal: bool = False,
) -> jax.Array:
    """The attention probabilities that :func:`dot_product_attention` applies.

    Args:
      q: ``[B, T, H, Dh]`` float; k: ``[B, S, H, Dh]`` float; mask, bias, causal as in
        :func:`dot_product_attention`.

    Returns:
      ``[B, H, T, S]`` float32, each row summing to one over the keys.
    """
    chex.assert_rank([q, k], 4)
    scale = q.shape[-1] ** -0.5
    logits = jnp.einsum("bthd,bshd->bhts", q, k, preferred_element_type=jnp.float32) * scale
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    full_mask = _as_4d_mask(mask)
    if causal:
        t, s = q.shape[1], k.shape[1]
        causal_mask = jnp.tril(jnp.ones((t, s), dtype=jnp.bool_))[None, None]
        full_mask = causal_mask if full_mask is None else full_mask & causal_mask
    if full_mask is not None:
        # A large finite negative (not -inf) keeps fully masked rows finite: they become uniform.
        logits = jnp.where(full_mask, logits, jnp.finfo(jnp.float32).min / 2)
    return jax.nn.softmax(logits, axis=-1)
