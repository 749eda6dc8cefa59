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

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np

from mmtx.schemas.tower_options import FEATURE_MAPS  # the config's choices, declared once

__all__ = ["elu_features", "favor_features", "favor_projection", "linear_attention"]

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
    num_features, head_dim = projection.shape
    if x.shape[-1] != head_dim:
        raise ValueError(f"projection {projection.shape} does not match head_dim of x {x.shape}")
    x = x.astype(jnp.float32) * head_dim**-0.25
    proj = _einsum("blhd,md->blhm", x, projection.astype(jnp.float32))
    exponent = proj - 0.5 * jnp.sum(x * x, axis=-1, keepdims=True)
    if is_query:
        stab = jnp.max(exponent, axis=-1, keepdims=True)
    else:
        masked = exponent
        if mask is not None:
            masked = jnp.where(mask[:, :, None, None], exponent, -jnp.inf)
        stab = jnp.max(masked, axis=(1, 3), keepdims=True)
        stab = jnp.where(jnp.isfinite(stab), stab, 0.0)  # every key masked
    phi = jnp.exp(exponent - jax.lax.stop_gradient(stab)) / math.sqrt(num_features)
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


def _noncausal(phi_q: jax.Array, phi_k: jax.Array, v: jax.Array) -> jax.Array:
    # One transpose to heads-major [B, H, L, .] up front makes every product below a plain
    # batched matmul. Left in [B, L, H, .], XLA:CPU transposes inside each einsum and again
    # in each gradient: ~30% slower forward+backward at every T from 4096 to 16384.
    pq, pk, vh = (jnp.swapaxes(x, 1, 2) for x in (phi_q, phi_k, v))
    kv = _einsum("bhsm,bhsd->bhmd", pk, vh)
    ksum = jnp.sum(pk, axis=2)  # [B, H, m]
    num = _einsum("bhtm,bhmd->bhtd", pq, kv)
    den = _einsum("bhtm,bhm->bht", pq, ksum)
    return jnp.swapaxes(_normalise(num, den), 1, 2)


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
    return_weights: bool = False,
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
      return_weights: must stay False: linear attention never forms the ``[T, S]`` attention
        matrix (that is what makes it linear), so there are no weights to return.

    Returns:
      ``[B, T, H, Dh]`` in ``q.dtype``; features, running sums and the division are float32.

    Raises:
      ValueError: unknown ``feature_map``; ``"favor"`` without ``rng``; ``causal`` with
        ``S != T``; bad shapes, ``mask`` shape, ``num_features`` or ``chunk_size``;
        ``return_weights=True``.
    """
    if return_weights:
        raise ValueError(
            "linear attention forms no attention map: it sums phi(k) v^T over the keys before "
            "any query sees them, so no [T, S] probabilities exist to return. Use the dense or "
            "local kernel to capture attention weights (capture_weights=True)."
        )
    _check_args(q, k, v, feature_map, causal, rng, mask, chunk_size)
    if mask is not None:
        mask = jnp.asarray(mask, dtype=jnp.bool_)
    v32 = v.astype(jnp.float32)
    if mask is not None:
        v32 = jnp.where(mask[:, :, None, None], v32, 0.0)  # NaN/inf in padding stays out

    if feature_map == "elu":
        phi_q = elu_features(q)
        phi_k = elu_features(k, mask)
    else:
        head_dim = q.shape[-1]
        m = 4 * head_dim if num_features is None else num_features
        projection = favor_projection(rng, m, head_dim)
        phi_q = favor_features(q, projection, is_query=True)
        phi_k = favor_features(k, projection, is_query=False, mask=mask)

    if causal:
        out = _causal(phi_q, phi_k, v32, int(chunk_size))
    else:
        out = _noncausal(phi_q, phi_k, v32)
    return out.astype(q.dtype)
