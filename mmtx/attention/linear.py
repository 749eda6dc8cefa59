"""Linear (kernelised) attention: ``elu + 1`` features and FAVOR+ random features.

Softmax attention ``out_i = sum_j exp(q_i . k_j) v_j / sum_j exp(q_i . k_j)`` is replaced by a
kernel ``phi(q_i) . phi(k_j)`` with explicit feature maps ``phi: R^Dh -> R^m_+``, so that

    out_i = phi(q_i)^T (sum_j phi(k_j) v_j^T) / (phi(q_i)^T sum_j phi(k_j)),

which costs ``O(T * m * Dh)`` instead of ``O(T * S * Dh)``.

* ``"elu"``: Katharopoulos, Vyas, Pappas & Fleuret, "Transformers are RNNs: Fast Autoregressive
  Transformers with Linear Attention", ICML 2020. ``phi(x) = elu(x) + 1`` (``m = Dh``), applied
  to q and k as given (no ``1 / sqrt(Dh)`` scaling); deterministic.
* ``"favor"``: Choromanski et al., "Rethinking Attention with Performers", ICLR 2021 (FAVOR+):
  positive orthogonal random features whose inner product is an unbiased estimate of the
  softmax kernel ``exp(q . k / sqrt(Dh))``. See :func:`favor_projection` and
  :func:`favor_features`.

Causal attention is computed chunkwise: the sequence is split into chunks of ``chunk_size``;
inside a chunk the quadratic form ``(phi(Q) phi(K)^T * tril) V`` is used on a
``chunk x chunk`` matrix, and the contribution of all earlier chunks comes from exclusive
cumulative sums of per-chunk summaries ``sum phi(k) v^T`` and ``sum phi(k)``. No ``T x T``
array is built and there is no Python loop over time.

All features, sums and the division are computed in float32; the output is cast to q's dtype.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["elu_features", "favor_features", "favor_projection", "linear_attention"]

FEATURE_MAPS = ("elu", "favor")
# Guards the denominator (as max(den, eps)): matters when a query sees no (unmasked) key, where the
# numerator is exactly zero too, so the output is 0 there instead of NaN.
_EPS = 1e-12
_HIGHEST = jax.lax.Precision.HIGHEST


def _einsum(spec: str, *args: jax.Array) -> jax.Array:
    return jnp.einsum(spec, *args, precision=_HIGHEST)


def favor_projection(rng: jax.Array, num_features: int, head_dim: int) -> jax.Array:
    """Draws the FAVOR+ orthogonal random projection ``W``, float32 ``[num_features, head_dim]``.

    Rows come in blocks of ``head_dim`` mutually orthogonal unit vectors (Q factor of the QR
    decomposition of a gaussian ``[head_dim, head_dim]`` matrix, column signs fixed so that
    ``diag(R) > 0``, which makes Q Haar-distributed; the last block is truncated),
    then each row is rescaled by the norm of an independent ``N(0, I_head_dim)`` vector
    (chi-distributed), so every row is marginally ``N(0, I)`` while rows within a block stay
    orthogonal.
    """
    if isinstance(num_features, bool) or not isinstance(num_features, int | np.integer):
        raise ValueError(f"num_features must be a positive int; got {num_features!r}")
    if num_features <= 0:
        raise ValueError(f"num_features must be a positive int; got {num_features!r}")
    num_blocks = math.ceil(num_features / head_dim)
    block_key, norm_key = jax.random.split(rng)
    gauss = jax.random.normal(block_key, (num_blocks, head_dim, head_dim), jnp.float32)
    qmat, rmat = jnp.linalg.qr(gauss)  # [nb, d, d], orthonormal columns
    # Sign fix (Mezzadri 2007): without it Q is not Haar-distributed and the kernel is biased.
    qmat = qmat * jnp.where(jnp.diagonal(rmat, axis1=-2, axis2=-1) < 0, -1.0, 1.0)[:, None, :]
    rows = jnp.swapaxes(qmat, -1, -2).reshape(num_blocks * head_dim, head_dim)[:num_features]
    norms = jnp.linalg.norm(
        jax.random.normal(norm_key, (num_features, head_dim), jnp.float32), axis=-1
    )
    return rows * norms[:, None]


def elu_features(x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """``phi(x) = elu(x) + 1`` in float32, ``[B, L, H, Dh] -> [B, L, H, Dh]``.

    ``mask`` (bool ``[B, L]``, True = real) zeroes the features of padded positions.
    """
    phi = jax.nn.elu(x.astype(jnp.float32)) + 1.0
    return _apply_mask(phi, mask)


def favor_features(
    x: jax.Array, projection: jax.Array, *, is_query: bool, mask: jax.Array | None = None
) -> jax.Array:
    """FAVOR+ positive random features, float32 ``[B, L, H, m]`` for ``x`` ``[B, L, H, Dh]``.

    With ``x' = x * Dh**-0.25`` and ``W = projection`` ``[m, Dh]``::

        phi(x) = exp(W x' - |x'|^2 / 2 - c) / sqrt(m),

    so ``E[phi(q) . phi(k)] = exp(q . k / sqrt(Dh)) * exp(-c_q - c_k)``. The stabiliser ``c``
    is the maximum of the exponent over the features of each query (``is_query=True``), or
    over all features and all real keys of each ``(batch, head)`` (``is_query=False``); it is a
    constant per query row resp. per attention problem, so it cancels in the normalised
    output, and is excluded from differentiation (``stop_gradient``: its exact derivative
    contribution to the output is zero). ``mask`` (bool ``[B, L]``, True = real) zeroes the
    features of padded positions and keeps them out of the key stabiliser.
    """
    chex.assert_rank([x, projection], [4, 2])
    if x.shape[-1] != projection.shape[1]:
        raise ValueError(f"projection {projection.shape} does not match head_dim of x {x.shape}")
    stab = None if is_query else favor_key_stabiliser(x, projection, mask)
    return _favor_phi(x, projection, stab, mask)


def _favor_exponent(x: jax.Array, projection: jax.Array) -> jax.Array:
    """``W x' - |x'|^2 / 2`` with ``x' = x * Dh**-0.25``: float32 ``[B, L, H, m]``."""
    x = x.astype(jnp.float32) * projection.shape[1] ** -0.25
    proj = _einsum("blhd,md->blhm", x, projection.astype(jnp.float32))
    return proj - 0.5 * jnp.sum(x * x, axis=-1, keepdims=True)


def favor_key_stabiliser(
    k: jax.Array, projection: jax.Array, mask: jax.Array | None = None
) -> jax.Array:
    """The keys' FAVOR+ stabiliser: the largest exponent over all features and real keys of
    each ``(batch, head)``, float32 ``[B, 1, H, 1]``, excluded from differentiation."""
    exponent = _favor_exponent(k, projection)
    if mask is not None:
        exponent = jnp.where(mask[:, :, None, None], exponent, -jnp.inf)
    stab = jnp.max(exponent, axis=(1, 3), keepdims=True)
    return jax.lax.stop_gradient(jnp.where(jnp.isfinite(stab), stab, 0.0))  # all masked: 0


def _favor_phi(
    x: jax.Array, projection: jax.Array, stab: jax.Array | None, mask: jax.Array | None
) -> jax.Array:
    """FAVOR+ features with the key stabiliser ``stab`` (``[B, 1, H, 1]``), or with each row's
    own maximum when ``stab`` is None (queries)."""
    exponent = _favor_exponent(x, projection)
    if stab is None:
        stab = jax.lax.stop_gradient(jnp.max(exponent, axis=-1, keepdims=True))
    phi = jnp.exp(exponent - stab) / math.sqrt(projection.shape[0])
    return _apply_mask(phi, mask)


def _apply_mask(phi: jax.Array, mask: jax.Array | None) -> jax.Array:
    if mask is None:
        return phi
    return jnp.where(mask[:, :, None, None], phi, 0.0)


def _check_args(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    feature_map: str,
    causal: bool,
    rng: jax.Array | None,
    mask: jax.Array | None,
    chunk_size: int,
) -> None:
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.ndim != 4:
            raise ValueError(f"{name} must be [B, L, H, Dh]; got shape {x.shape}")
    chex.assert_equal_shape([k, v])
    if q.shape[0] != k.shape[0] or q.shape[2:] != k.shape[2:]:
        raise ValueError(
            f"q {q.shape} and k {k.shape} must agree on batch, heads and head_dim "
            "(layout [batch, length, heads, head_dim])."
        )
    if feature_map not in FEATURE_MAPS:
        raise ValueError(f"unknown feature_map {feature_map!r}; expected one of {FEATURE_MAPS}")
    if feature_map == "favor" and rng is None:
        raise ValueError('feature_map="favor" needs rng (a jax PRNG key) to draw its projection')
    if causal and q.shape[1] != k.shape[1]:
        raise ValueError(f"causal attention needs S == T; got T={q.shape[1]}, S={k.shape[1]}")
    if mask is not None and tuple(mask.shape) != (k.shape[0], k.shape[1]):
        raise ValueError(
            f"mask must be a [B, S] = {k.shape[:2]} key-padding mask; got {mask.shape}"
        )
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int | np.integer):
        raise ValueError(f"chunk_size must be a positive int; got {chunk_size!r}")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be a positive int; got {chunk_size!r}")


def _normalise(num: jax.Array, den: jax.Array) -> jax.Array:
    return num / jnp.maximum(den, _EPS)[..., None]


def _row_blocks(x: jax.Array, block: int) -> jax.Array:
    """``[B, L, ...]`` (``L`` a multiple of ``block``) -> ``[L / block, B, block, ...]``."""
    b, length = x.shape[:2]
    return jnp.swapaxes(x.reshape(b, length // block, block, *x.shape[2:]), 0, 1)


def _from_row_blocks(x: jax.Array) -> jax.Array:
    """Inverse of :func:`_row_blocks`."""
    n, b, block = x.shape[:3]
    return jnp.swapaxes(x, 0, 1).reshape(b, n * block, *x.shape[3:])


def _over_row_blocks(fn: Any, block: int, *xs: jax.Array) -> Any:
    """``fn`` applied to row blocks of ``xs`` (each ``[B, L, ...]``) one after another, the
    outputs (each ``[B, block, ...]``) put back together; one call when ``L <= block``."""
    if xs[0].shape[1] <= block:
        return fn(*xs)
    outs = jax.lax.map(lambda blocks: fn(*blocks), tuple(_row_blocks(x, block) for x in xs))
    return jax.tree.map(_from_row_blocks, outs)


def _sum_over_row_blocks(fn: Any, block: int, *xs: jax.Array) -> Any:
    """``sum_blocks fn(blocks of xs)``, the blocks visited one after another."""
    if xs[0].shape[1] <= block:
        return fn(*xs)
    blocked = tuple(_row_blocks(x, block) for x in xs)
    first = fn(*(x[0] for x in blocked))

    def add(total: Any, blocks: tuple[jax.Array, ...]) -> tuple[Any, None]:
        return jax.tree.map(jnp.add, total, fn(*blocks)), None

    return jax.lax.scan(add, first, tuple(x[1:] for x in blocked))[0]


def _map_and_sum_over_row_blocks(fn: Any, block: int, *xs: jax.Array) -> tuple[Any, Any]:
    """``fn(blocks) -> (rows, summand)`` over row blocks of ``xs`` one after another: the
    ``rows`` put back together (as :func:`_over_row_blocks`) and the summands added up."""
    if xs[0].shape[1] <= block:
        return fn(*xs)
    blocked = tuple(_row_blocks(x, block) for x in xs)
    _, summand_shape = jax.eval_shape(fn, *(x[0] for x in blocked))
    zeros = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), summand_shape)

    def step(total: Any, blocks: tuple[jax.Array, ...]) -> tuple[Any, Any]:
        rows, summand = fn(*blocks)
        return jax.tree.map(jnp.add, total, summand), rows

    total, rows = jax.lax.scan(step, zeros, blocked)
    return jax.tree.map(_from_row_blocks, rows), total


def _features(
    feature_map: str,
    x: jax.Array,
    mask: jax.Array | None,
    projection: jax.Array | None,
    stab: jax.Array | None,
) -> jax.Array:
    if feature_map == "elu":
        return elu_features(x, mask)
    return _favor_phi(x, projection, stab, mask)


def _key_summaries(feature_map, block, k, v, mask, projection, stab):
    """``(sum_j phi(k_j) v_j^T [B, H, m, Dv], sum_j phi(k_j) [B, H, m])``, float32."""

    def one(k, v, mask):
        phi_k = _features(feature_map, k, mask, projection, stab)
        return _einsum("bshm,bshd->bhmd", phi_k, v), jnp.sum(phi_k, axis=1)

    return _sum_over_row_blocks(one, block, k, v, mask)


def _query_rows(feature_map, q, projection, kv, ksum):
    """``out [B, T, H, Dv]`` for the queries ``q`` given the key summaries."""
    phi_q = _features(feature_map, q, None, projection, None)
    num = _einsum("bthm,bhmd->bthd", phi_q, kv)
    den = _einsum("bthm,bhm->bth", phi_q, ksum)
    return num / jnp.maximum(den, _EPS)[..., None]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _noncausal(feature_map, block, q, k, v, mask, projection, stab):
    """Non-causal linear attention over ``block``-row blocks (see :func:`linear_attention`).

    Every pass (key summaries; outputs; in the backward pass, query then key gradients)
    streams its inputs block by block, recomputing the features inside the block, so each
    block's intermediates stay in cache and nothing ``T``- or ``S``-long is kept but the
    inputs and outputs themselves. ``mask`` is a bool ``[B, S]`` key mask.
    """
    return _noncausal_fwd(feature_map, block, q, k, v, mask, projection, stab)[0]


def _noncausal_fwd(feature_map, block, q, k, v, mask, projection, stab):
    kv, ksum = _key_summaries(feature_map, block, k, v, mask, projection, stab)
    out = _over_row_blocks(lambda q: _query_rows(feature_map, q, projection, kv, ksum), block, q)
    return out, (q, k, v, mask, projection, stab, kv, ksum)


def _noncausal_bwd(feature_map, block, residuals, g):
    q, k, v, mask, projection, stab, kv, ksum = residuals

    def query_grads(q, g):
        _, pullback = jax.vjp(
            lambda q, kv, ksum: _query_rows(feature_map, q, projection, kv, ksum), q, kv, ksum
        )
        dq, dkv, dksum = pullback(g)
        return dq, (dkv, dksum)

    dq, (dkv, dksum) = _map_and_sum_over_row_blocks(query_grads, block, q, g)

    def key_grads(k, v, mask):
        _, pullback = jax.vjp(
            lambda k, v: _key_summaries(feature_map, block, k, v, mask, projection, stab), k, v
        )
        return pullback((dkv, dksum))

    dk, dv = _over_row_blocks(key_grads, block, k, v, mask)
    zero = lambda x: None if x is None else jnp.zeros_like(x)
    return dq, dk, dv, None, zero(projection), zero(stab)


_noncausal.defvjp(_noncausal_fwd, _noncausal_bwd)


def _causal(phi_q: jax.Array, phi_k: jax.Array, v: jax.Array, chunk_size: int) -> jax.Array:
    b, t, h, m = phi_q.shape
    dv = v.shape[-1]
    c = min(chunk_size, t)
    n = -(-t // c)
    pad = n * c - t
    if pad:
        # Zero key features: padded keys contribute nothing; padded query rows are dropped.
        widths = ((0, 0), (0, pad), (0, 0), (0, 0))
        phi_q, phi_k, v = (jnp.pad(x, widths) for x in (phi_q, phi_k, v))
    pq = phi_q.reshape(b, n, c, h, m)
    pk = phi_k.reshape(b, n, c, h, m)
    vc = v.reshape(b, n, c, h, dv)

    # Per-chunk summaries and their exclusive prefix sums over chunks.
    kv_chunk = _einsum("bnchm,bnchd->bnhmd", pk, vc)
    ks_chunk = jnp.sum(pk, axis=2)  # [b, n, h, m]
    kv_prev = jnp.cumsum(kv_chunk, axis=1) - kv_chunk
    ks_prev = jnp.cumsum(ks_chunk, axis=1) - ks_chunk

    # Intra-chunk quadratic part, lower triangle including the diagonal.
    tril = jnp.tril(jnp.ones((c, c), dtype=bool))
    scores = _einsum("bnchm,bnehm->bnhce", pq, pk)
    scores = jnp.where(tril, scores, 0.0)
    num = _einsum("bnhce,bnehd->bnchd", scores, vc)
    den = jnp.swapaxes(jnp.sum(scores, axis=-1), -1, -2)  # [b, n, c, h]

    num = num + _einsum("bnchm,bnhmd->bnchd", pq, kv_prev)
    den = den + _einsum("bnchm,bnhm->bnch", pq, ks_prev)
    out = _normalise(num, den).reshape(b, n * c, h, dv)
    return out[:, :t]


def linear_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    feature_map: str = "elu",
    num_features: int | None = None,
    causal: bool = False,
    rng: jax.Array | None = None,
    mask: jax.Array | None = None,
    chunk_size: int = 64,
    block_size: int = 2048,
) -> jax.Array:
    """Linear attention ``out_i = phi(q_i).sum_j phi(k_j) v_j^T / (phi(q_i).sum_j phi(k_j))``.

    Args:
      q: queries ``[B, T, H, Dh]``, any float dtype.
      k: keys ``[B, S, H, Dh]`` (``S`` may differ from ``T`` unless ``causal``).
      v: values ``[B, S, H, Dh]``.
      feature_map: ``"elu"`` (Katharopoulos et al., ICML 2020: ``phi(x) = elu(x) + 1``, exact
        and deterministic, no scaling of q/k) or ``"favor"`` (Choromanski et al., ICLR 2021:
        FAVOR+ positive orthogonal random features approximating softmax attention with
        logits ``q . k / sqrt(Dh)``).
      num_features: number ``m`` of random features for ``"favor"``; default ``4 * Dh``
        (ignored for ``"elu"``, whose feature dimension is ``Dh``). The approximation error
        shrinks roughly like ``1 / sqrt(m)``.
      causal: query ``i`` uses only keys ``j <= i`` (requires ``S == T``); computed chunkwise
        without any ``T x T`` intermediate.
      rng: PRNG key used to draw the FAVOR+ projection (required for ``"favor"``; the same key
        gives the same projection and hence the same output). Ignored for ``"elu"``.
      mask: optional key-padding mask bool ``[B, S]``, True = real key; padded keys get zero
        features and contribute nothing. A query with no visible key outputs zeros.
      chunk_size: chunk length of the causal computation (memory/time trade-off only; any
        positive value gives the same result up to float round-off).
      block_size: rows per block of the non-causal computation, which streams queries and
        keys through every pass (forward and backward) block by block so that each block's
        intermediates stay in cache; a locality knob only, like ``chunk_size``.

    Returns:
      ``[B, T, H, Dh]`` in ``q.dtype``; features, running sums and the division are float32.

    Raises:
      ValueError: unknown ``feature_map``; ``"favor"`` without ``rng``; ``causal`` with
        ``S != T``; bad shapes, ``mask`` shape, ``num_features`` or ``chunk_size``.
    """
    _check_args(q, k, v, feature_map, causal, rng, mask, chunk_size)
    if isinstance(block_size, bool) or not isinstance(block_size, int | np.integer):
        raise ValueError(f"block_size must be a positive int; got {block_size!r}")
    if block_size <= 0:
        raise ValueError(f"block_size must be a positive int; got {block_size!r}")
    if mask is not None:
        mask = jnp.asarray(mask, dtype=jnp.bool_)
    v32 = v.astype(jnp.float32)
    if mask is not None:
        v32 = jnp.where(mask[:, :, None, None], v32, 0.0)  # NaN/inf in padding stays out

    projection = stab = None
    if feature_map == "favor":
        head_dim = q.shape[-1]
        m = 4 * head_dim if num_features is None else num_features
        projection = favor_projection(rng, m, head_dim)
        stab = favor_key_stabiliser(k, projection, mask)

    if causal:
        phi_q = _features(feature_map, q, None, projection, None)
        phi_k = _features(feature_map, k, mask, projection, stab)
        return _causal(phi_q, phi_k, v32, int(chunk_size)).astype(q.dtype)

    block = int(block_size)
    t, s = q.shape[1], k.shape[1]
    if mask is None:
        mask = jnp.ones(k.shape[:2], jnp.bool_)
    if t > block and t % block:  # padded query rows are computed, then dropped
        q = jnp.pad(q, ((0, 0), (0, block - t % block), (0, 0), (0, 0)))
    if s > block and s % block:  # padded keys are masked out
        widths = ((0, 0), (0, block - s % block), (0, 0), (0, 0))
        k, v32 = jnp.pad(k, widths), jnp.pad(v32, widths)
        mask = jnp.pad(mask, ((0, 0), (0, block - s % block)))
    out = _noncausal(feature_map, block, q, k, v32, mask, projection, stab)
    return out[:, :t].astype(q.dtype)
