"""Sliding-window (local) self-attention with optional global tokens, computed blockwise.

Query ``i`` sees key ``j`` iff ``|i - j| <= radius``, or ``i < num_global``, or
``j < num_global`` (global tokens see and are seen by everything); with ``causal=True`` also
``j <= i``; an optional key-padding mask is applied on top. The result equals dense softmax
attention under that combined mask, but no ``T x T`` array is ever built: time and memory grow
linearly in ``T`` (for fixed ``radius`` and ``num_global``).

Blocking scheme: ``T`` is padded up to ``nb * block`` with ``block = min(max(radius, 16), T)``
(so ``block >= radius`` or ``block == T``). Query block ``n`` attends to the keys of blocks
``n - 1, n, n + 1`` (``3 * block`` keys, zero-padded at the ends) with the exact band mask from
absolute positions, plus the ``num_global`` global keys concatenated after them; a global key
that already lies inside the band of a query is masked out of the concatenated part, so it is
counted once. The ``num_global`` global query rows are recomputed with a dense
``[num_global, T]`` attention and overwrite the blockwise rows.

``return_weights=True`` also returns the probabilities exactly as computed, as a
:class:`LocalWeights`: the band ``[B, H, T, 3 * block + num_global]`` (each query's row of
its block's window, then the global-key columns) and the global query rows
``[B, H, num_global, T]``; :func:`local_weights_to_dense` scatters them into a dense
``[B, H, T, T]`` map for plotting.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["LocalWeights", "local_attention", "local_block_size", "local_weights_to_dense"]

_MIN_BLOCK = 16
# Same fill as jax.nn.dot_product_attention: finite, so a fully masked row stays NaN-free.
_LARGE_NEGATIVE = -0.7 * float(jnp.finfo(jnp.float32).max)


class LocalWeights(NamedTuple):
    """The probabilities :func:`local_attention` applies, in the layout it computes them.

    With ``T`` queries, ``G = num_global`` and ``w = local_block_size(T, radius)``, query
    ``i`` (in block ``n = i // w``) attends over ``3 * w`` window keys and ``G`` global keys:

    - ``band``: float32 ``[..., H, T, 3 * w + G]``. Column ``c < 3 * w`` is key
      ``(n - 1) * w + c`` (zero where that key is outside ``[0, T)``, outside the band
      ``|i - j| <= radius``, causal-masked or padded); column ``3 * w + g`` is global key
      ``g``, zero where ``g`` already lies in the band (it is counted in the window part).
      Rows ``i < G`` (the global queries) are zero here: theirs are ``global_rows``.
    - ``global_rows``: float32 ``[..., H, G, T]``, the dense rows of the global queries.

    Each query row sums to one over its keys, except a row with no visible key (possible only
    through a key-padding mask), which is all zeros: its output is the mean of ``v``, not a
    softmax over the band. Leading axes ``...`` are ``[B]``, or ``[L, B]`` once stacked over
    layers.
    """

    band: jax.Array
    global_rows: jax.Array


def local_block_size(length: int, radius: int) -> int:
    """The block length ``w`` :func:`local_attention` uses for ``length`` tokens and ``radius``
    (``min(max(radius, 16), length)``, at least 1); each query block sees ``3 * w`` keys."""
    return max(1, min(max(radius, _MIN_BLOCK), length))


def local_weights_to_dense(weights: LocalWeights) -> jax.Array:
    """Scatters a :class:`LocalWeights` into the dense ``[..., H, T, T]`` float32 map.

    Entry ``[..., h, i, j]`` is the probability query ``i`` gives key ``j`` (zero outside
    the band + global pattern): what :func:`mmtx.attention.attention_weights` returns under the
    same band, global, causal and padding mask, for every row with a visible key. For
    plotting: it builds the ``T x T`` array the kernel avoids.
    """
    band, global_rows = weights
    t, num_global = band.shape[-2], global_rows.shape[-2]
    window = band.shape[-1] - num_global
    if window % 3 or global_rows.shape[-1] != t:
        raise ValueError(
            f"not a LocalWeights layout: band {band.shape}, global_rows {global_rows.shape}"
        )
    block = window // 3
    rows = jnp.arange(t)[:, None]
    cols = (rows // block - 1) * block + jnp.arange(window)[None, :]  # [T, 3 * block]
    inside = (cols >= 0) & (cols < t)
    local = jnp.where(inside, band[..., :window], 0.0)
    dense = jnp.zeros((*band.shape[:-1], t), jnp.float32)
    dense = dense.at[..., rows, jnp.clip(cols, 0, t - 1)].add(local)
    dense = dense.at[..., :num_global].add(band[..., window:])
    return dense.at[..., :num_global, :].set(global_rows)


def _check_args(
    q: jax.Array, k: jax.Array, v: jax.Array, radius: int, num_global: int, mask: jax.Array | None
) -> None:
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.ndim != 4:
            raise ValueError(f"{name} must be [B, T, H, Dh]; got shape {x.shape}")
    if not (q.shape == k.shape == v.shape):
        raise ValueError(
            f"q {q.shape}, k {k.shape} and v {v.shape} must have the same shape [B, T, H, Dh] "
            "(self-attention)."
        )
    if isinstance(radius, bool) or not isinstance(radius, int | np.integer) or radius < 0:
        raise ValueError(f"radius must be a non-negative int; got {radius!r}")
    t = q.shape[1]
    if (
        isinstance(num_global, bool)
        or not isinstance(num_global, int | np.integer)
        or not 0 <= num_global <= t
    ):
        raise ValueError(f"num_global must be an int in [0, T={t}]; got {num_global!r}")
    if mask is not None and tuple(mask.shape) != (q.shape[0], t):
        raise ValueError(
            f"mask must be a key-padding mask [B, T] = {q.shape[:2]}; got {mask.shape}"
        )


def _masked_softmax_attention(
    logits: jax.Array, visible: jax.Array, values: jax.Array, spec: str
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Softmax over the last axis of float32 ``logits`` where ``visible``; returns
    (out, weights, any)."""
    logits = jnp.where(visible, logits, _LARGE_NEGATIVE)
    weights = jax.nn.softmax(logits, axis=-1)
    out = jnp.einsum(spec, weights, values, preferred_element_type=jnp.float32)
    return out, weights, jnp.any(visible, axis=-1)


class _Pattern(NamedTuple):
    """Who sees whom, besides key padding: keys within ``radius`` of the query, the
    ``num_global`` global tokens, and with ``causal`` only keys at or before the query."""

    radius: int
    num_global: int
    causal: bool


class _Operands(NamedTuple):
    """:func:`local_attention`'s inputs, prepared once for its band and global-query parts."""

    q: jax.Array  # [B, T, H, Dh]
    k: jax.Array  # [B, T, H, Dh]
    v32: jax.Array  # [B, T, H, Dh] float32
    key_ok: jax.Array  # bool [B, T]: True for a real key
    mean_v: jax.Array  # float32 [B, H, Dh]: the output of a row with no visible key
    scale: float  # 1 / sqrt(Dh)


def _empty_result(
    q: jax.Array, num_global: int, return_weights: bool
) -> jax.Array | tuple[jax.Array, LocalWeights]:
    """:func:`local_attention`'s result for ``T = 0``: zeros ``[B, 0, H, Dh]`` (and empty
    weights)."""
    batch, _, heads, _ = q.shape
    empty = LocalWeights(
        jnp.zeros((batch, heads, 0, 3 + num_global), jnp.float32),
        jnp.zeros((batch, heads, num_global, 0), jnp.float32),
    )
    return (jnp.zeros_like(q), empty) if return_weights else jnp.zeros_like(q)


def _to_blocks(x: jax.Array, block: int, nb: int) -> jax.Array:
    """``[B, T, ...]`` -> ``[B, nb, block, ...]``, zero-padded at the end to ``nb * block``."""
    pad = nb * block - x.shape[1]
    x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
    return x.reshape((x.shape[0], nb, block, *x.shape[2:]))


def _neighbours(xb: jax.Array) -> jax.Array:
    """``[B, nb, block, ...]`` -> ``[B, nb, 3 * block, ...]``: blocks ``n - 1, n, n + 1``
    (zero-padded)."""
    xp = jnp.pad(xb, [(0, 0), (1, 1)] + [(0, 0)] * (xb.ndim - 2))
    return jnp.concatenate([xp[:, :-2], xp[:, 1:-1], xp[:, 2:]], axis=2)


def _window_logits(
    qb: jax.Array, kw: jax.Array, okw: jax.Array, t: int, pattern: _Pattern, scale: float
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Each query block against its window of keys (blocks ``n - 1, n, n + 1``).

    ``qb``: ``[B, nb, block, H, Dh]`` queries; ``kw``: ``[B, nb, 3 * block, H, Dh]`` keys;
    ``okw``: bool ``[B, nb, 3 * block]`` real keys. Returns float32 logits and bool
    visibility, both ``[B, nb, H, block, 3 * block]``, and the query positions
    ``[nb, block, 1]``.
    """
    nb, block = qb.shape[1], qb.shape[2]
    qpos = (jnp.arange(nb)[:, None] * block + jnp.arange(block)[None, :])[:, :, None]
    kpos = ((jnp.arange(nb)[:, None] - 1) * block + jnp.arange(3 * block)[None, :])[:, None, :]
    band = jnp.abs(qpos - kpos) <= pattern.radius  # [nb, block, 3*block]
    band = band & (kpos >= 0) & (kpos < t)
    if pattern.causal:
        band = band & (kpos <= qpos)
    visible = band[None, :, None] & okw[:, :, None, None, :]  # [B, nb, 1, block, 3*block]
    logits = jnp.einsum("bnqhd,bnkhd->bnhqk", qb, kw, preferred_element_type=jnp.float32) * scale
    logits = logits.astype(jnp.float32)
    return logits, jnp.broadcast_to(visible, logits.shape), qpos


def _with_global_keys(
    window: tuple[jax.Array, jax.Array, jax.Array],
    qb: jax.Array,
    qpos: jax.Array,
    x: _Operands,
    pattern: _Pattern,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``window`` (logits ``[B, nb, H, block, K]``, visibility, values ``[B, nb, K, H, Dh]``)
    with the ``G`` global keys appended to every block's keys (``K -> K + G``); a global key
    already inside a query's band is hidden here, so it is counted once."""
    logits, visible, values = window
    g = pattern.num_global
    kg, vg, okg = x.k[:, :g], x.v32[:, :g], x.key_ok[:, :g]
    gpos = jnp.arange(g)[None, None, :]
    vis_g = jnp.abs(qpos - gpos) > pattern.radius  # [nb, block, G]
    if pattern.causal:
        vis_g = vis_g & (gpos <= qpos)
    vis_g = vis_g[None, :, None] & okg[:, None, None, None, :]  # [B, nb, 1, block, G]
    logits_g = (
        jnp.einsum("bnqhd,bghd->bnhqg", qb, kg, preferred_element_type=jnp.float32) * x.scale
    ).astype(jnp.float32)
    vis_g = jnp.broadcast_to(vis_g, logits_g.shape)
    logits = jnp.concatenate([logits, logits_g], axis=-1)
    visible = jnp.concatenate([visible, vis_g], axis=-1)
    vg_b = jnp.broadcast_to(vg[:, None], (vg.shape[0], qb.shape[1], *vg.shape[1:]))
    return logits, visible, jnp.concatenate([values, vg_b], axis=2)


def _band_attention(
    x: _Operands, pattern: _Pattern
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """Every query's attention over its block's window and the global keys.

    Returns the float32 output ``[B, T, H, Dh]`` (``mean_v`` for a row with no visible key)
    and, as computed, the probabilities ``[B, nb, H, block, 3 * block + G]``
    with whether each row had a visible key, bool ``[B, nb, H, block]``.
    """
    batch, t, heads, dh = x.q.shape
    block = local_block_size(t, pattern.radius)
    nb = -(-t // block)
    qb = _to_blocks(x.q, block, nb)  # [B, nb, block, H, Dh]
    kw = _neighbours(_to_blocks(x.k, block, nb))  # [B, nb, 3*block, H, Dh]
    vw = _neighbours(_to_blocks(x.v32, block, nb))
    okw = _neighbours(_to_blocks(x.key_ok, block, nb))  # [B, nb, 3*block]; padding -> False
    logits, visible, qpos = _window_logits(qb, kw, okw, t, pattern, x.scale)
    window = (logits, visible, vw)
    if pattern.num_global > 0:
        window = _with_global_keys(window, qb, qpos, x, pattern)
    out_b, weights_b, any_b = _masked_softmax_attention(*window, "bnhqk,bnkhd->bnqhd")
    out_b = jnp.where(jnp.moveaxis(any_b, 2, 3)[..., None], out_b, x.mean_v[:, None, None])
    return out_b.reshape(batch, nb * block, heads, dh)[:, :t], (weights_b, any_b)


def _global_query_attention(
    x: _Operands, pattern: _Pattern
) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """The ``G`` global queries' dense attention over all ``T`` keys.

    Returns the float32 output ``[B, G, H, Dh]`` (``mean_v`` for a row with no visible key)
    and the probabilities ``[B, H, G, T]`` with whether each row had a visible key, bool
    ``[B, H, G]``.
    """
    t, g = x.q.shape[1], pattern.num_global
    logits = (
        jnp.einsum("bghd,bshd->bhgs", x.q[:, :g], x.k, preferred_element_type=jnp.float32) * x.scale
    ).astype(jnp.float32)
    visible = jnp.broadcast_to(x.key_ok[:, None, None, :], logits.shape)
    if pattern.causal:
        visible = visible & (jnp.arange(t)[None, :] <= jnp.arange(g)[:, None])
    out, weights, any_visible = _masked_softmax_attention(logits, visible, x.v32, "bhgs,bshd->bghd")
    out = jnp.where(jnp.moveaxis(any_visible, 1, 2)[..., None], out, x.mean_v[:, None])
    return out, (weights, any_visible)


def _local_weights(
    band: tuple[jax.Array, jax.Array],
    global_rows: tuple[jax.Array, jax.Array] | None,
    t: int,
    num_global: int,
) -> LocalWeights:
    """The :class:`LocalWeights` of the probabilities as computed: ``band`` is
    :func:`_band_attention`'s (probabilities, any visible key), ``global_rows``
    :func:`_global_query_attention`'s (None without global tokens). Rows with no visible
    key, and the global queries' rows of the band, are zeroed."""
    weights_b, any_b = band
    batch, nb, heads, block, width = weights_b.shape
    # [B, nb, H, block, K] -> [B, H, T, K]
    weights = jnp.where(any_b[..., None], weights_b, 0.0)
    weights = jnp.moveaxis(weights, 1, 2).reshape(batch, heads, nb * block, width)[:, :, :t]
    weights = jnp.where((jnp.arange(t) >= num_global)[:, None], weights, 0.0)
    if global_rows is None:
        return LocalWeights(weights, jnp.zeros((batch, heads, 0, t), jnp.float32))
    weights_g, any_g = global_rows
    return LocalWeights(weights, jnp.where(any_g[..., None], weights_g, 0.0))


def local_attention(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    *,
    radius: int,
    num_global: int = 0,
    causal: bool = False,
    mask: jax.Array | None = None,
    return_weights: bool = False,
) -> jax.Array | tuple[jax.Array, LocalWeights]:
    """Banded softmax self-attention with global tokens, blockwise and linear in ``T``.

    Args:
      q: ``[B, T, H, Dh]`` float queries.
      k: ``[B, T, H, Dh]`` float keys (same shape as ``q``: self-attention).
      v: ``[B, T, H, Dh]`` float values.
      radius: non-negative int; query ``i`` sees key ``j`` when ``|i - j| <= radius``.
      num_global: int in ``[0, T]``; positions ``< num_global`` are global tokens: they see all
        keys and are seen by all queries.
      causal: if True, query ``i`` additionally only sees keys ``j <= i`` (global ones too).
      mask: optional key-padding mask, bool ``[B, T]``, ``True`` = real key; applied on top.
      return_weights: also return the probabilities as computed, a :class:`LocalWeights`
        (band ``[B, H, T, 3 * w + num_global]`` and global rows ``[B, H, num_global, T]``,
        ``w = local_block_size(T, radius)``); no dense ``T x T`` array is built.

    Returns:
      ``[B, T, H, Dh]`` in the dtype of ``q``: ``softmax(q k^T / sqrt(Dh), masked) v`` with the
      logits and softmax in float32. A query row with no visible key (possible only through
      ``mask``) returns the mean of ``v`` over all ``T`` positions, like
      :func:`mmtx.attention.dot_product_attention`; its gradient w.r.t. ``q``/``k`` is zero.
      With ``return_weights``: ``(out, LocalWeights)``.

    Raises:
      ValueError: on non-4-D or mismatched ``q``/``k``/``v``, a negative ``radius``,
        ``num_global`` outside ``[0, T]``, or a ``mask`` that is not ``[B, T]``.
    """
    _check_args(q, k, v, radius, num_global, mask)
    batch, t, heads, dh = q.shape
    pattern = _Pattern(int(radius), int(num_global), causal)
    if t == 0:
        return _empty_result(q, pattern.num_global, return_weights)
    key_ok = jnp.ones((batch, t), jnp.bool_) if mask is None else jnp.asarray(mask, jnp.bool_)
    v32 = v.astype(jnp.float32)
    x = _Operands(q, k, v32, key_ok, jnp.mean(v32, axis=1), 1.0 / math.sqrt(dh))
    out, band = _band_attention(x, pattern)
    global_rows = None
    if pattern.num_global > 0:  # the global queries' dense rows overwrite their band rows
        out_g, global_rows = _global_query_attention(x, pattern)
        out = jnp.concatenate([out_g, out[:, pattern.num_global :]], axis=1)
    chex.assert_shape(out, (batch, t, heads, dh))
    out = out.astype(q.dtype)
    if not return_weights:
        return out
    return out, _local_weights(band, global_rows, t, pattern.num_global)
