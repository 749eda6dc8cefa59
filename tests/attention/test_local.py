"""Tests for :mod:`mmtx.attention.local` against a dense masked softmax-attention reference.

The reference builds the ``[T, T]`` visibility mask straight from the definition with numpy
broadcasting and runs plain float32 softmax attention; a query row with no visible key gets
uniform weights (the mean of ``v``), which is checked separately against
:func:`mmtx.attention.dot_product_attention`.
"""

from __future__ import annotations

import functools

import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np
import pytest

from mmtx.attention.dense import dot_product_attention
from mmtx.attention.local import local_attention, local_block_size, local_weights_to_dense

# Tiny programs: a quick compile matters more than fast code.
jit = functools.partial(
    jax.jit,
    compiler_options={
        "xla_backend_optimization_level": 0,
        "xla_llvm_disable_expensive_passes": True,
    },
)

B, H, D = 2, 2, 4


def _normal(shape: tuple[int, ...], seed: int) -> jnp.ndarray:
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _qkv(t: int, seed: int = 0) -> tuple[jnp.ndarray, ...]:
    return tuple(_normal((B, t, H, D), seed + i) for i in range(3))


def _padding_mask(t: int) -> np.ndarray:
    """Batch 0 loses its last third (at least one key), batch 1 its first key and key t//2."""
    mask = np.ones((B, t), bool)
    mask[0, t - max(1, t // 3) :] = False
    mask[1, 0] = False
    mask[1, t // 2] = False
    return mask


def dense_mask(t: int, radius: int, num_global: int, causal: bool, mask=None) -> np.ndarray:
    """[B, T, T] bool from the definition: True where query i sees key j."""
    i = np.arange(t)[:, None]
    j = np.arange(t)[None, :]
    vis = (np.abs(i - j) <= radius) | (i < num_global) | (j < num_global)
    if causal:
        vis &= j <= i
    vis = np.broadcast_to(vis, (B, t, t))
    if mask is not None:
        vis = vis & np.asarray(mask, bool)[:, None, :]
    return vis


def ref_attention(q, k, v, visible) -> jnp.ndarray:
    """Plain float32 softmax attention under ``visible`` [B, T, T]; empty rows are uniform."""
    q, k, v = (x.astype(jnp.float32) for x in (q, k, v))
    logits = jnp.einsum("bthd,bshd->bhts", q, k, precision="highest") / np.sqrt(q.shape[-1])
    vis = jnp.asarray(visible)[:, None]
    row_max = jnp.max(jnp.where(vis, logits, -jnp.inf), axis=-1, keepdims=True)
    row_max = jax.lax.stop_gradient(jnp.where(jnp.isfinite(row_max), row_max, 0.0))
    e = jnp.where(vis, jnp.exp(logits - row_max), 0.0)
    total = e.sum(-1, keepdims=True)
    anyv = vis.any(-1, keepdims=True)
    w = jnp.where(anyv, e / jnp.where(anyv, total, 1.0), 1.0 / q.shape[1])
    return jnp.einsum("bhts,bshd->bthd", w, v, precision="highest")


def _value_and_grads(fn, q, k, v, proj):
    """Output and d(sum(out * proj))/d(q, k, v)."""

    def loss(q, k, v):
        out = fn(q, k, v)
        return jnp.sum(out.astype(jnp.float32) * proj), out

    (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v)
    return out, grads


def _compare(t: int, radius: int, num_global: int, causal: bool, use_mask: bool) -> None:
    q, k, v = _qkv(t, seed=t + 10 * radius + 100 * num_global)
    proj = _normal((B, t, H, D), seed=7)
    mask = _padding_mask(t) if use_mask else None
    visible = dense_mask(t, radius, num_global, causal, mask)

    @jit
    def both(q, k, v, proj, mask, visible):
        f = functools.partial(
            local_attention, radius=radius, num_global=num_global, causal=causal, mask=mask
        )
        ref = functools.partial(ref_attention, visible=visible)
        return _value_and_grads(f, q, k, v, proj), _value_and_grads(ref, q, k, v, proj)

    m = None if mask is None else jnp.asarray(mask)
    (out, grads), (ref_out, ref_grads) = both(q, k, v, proj, m, jnp.asarray(visible))
    assert out.shape == (B, t, H, D) and out.dtype == jnp.float32
    np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
    for name, g, rg in zip("qkv", grads, ref_grads, strict=True):
        np.testing.assert_allclose(g, rg, rtol=1e-4, atol=1e-5, err_msg=f"grad wrt {name}")


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("num_global", [0, 1, 3])
@pytest.mark.parametrize("radius", [0, 1, 3, 8, 40])
def test_matches_dense_t33(radius: int, num_global: int, causal: bool) -> None:
    # Key-padding mask on half of the grid, chosen so that each radius sees both.
    _compare(33, radius, num_global, causal, use_mask=(radius + num_global + causal) % 2 == 1)


@pytest.mark.parametrize(
    ("t", "radius", "num_global", "causal", "use_mask"),
    [
        (1, 3, 1, True, False),
        (1, 40, 1, False, True),
        (7, 1, 0, True, True),
        (7, 8, 3, True, False),
        (64, 0, 1, True, True),
        (64, 8, 3, True, True),
        (33, 8, 33, False, True),  # every position global
        (40, 20, 2, False, True),  # block = 20: T a multiple of the block
    ],
)
def test_matches_dense_other_lengths(
    t: int, radius: int, num_global: int, causal: bool, use_mask: bool
) -> None:
    _compare(t, radius, num_global, causal, use_mask)


def test_fully_masked_row_matches_dot_product_attention() -> None:
    t, radius = 20, 2
    q, k, v = _qkv(t, seed=3)
    mask = np.ones((B, t), bool)
    mask[0, 0] = False  # the global key is padding too
    mask[0, 5:15] = False  # queries 8..11 of batch 0 see no key; query 0 (global) sees some
    mask[1, :] = False  # batch 1: every row empty
    visible = dense_mask(t, radius, 1, False, mask)
    assert not visible[0, 10].any() and not visible[1].any()
    out = jit(functools.partial(local_attention, radius=radius, num_global=1))(
        q, k, v, mask=jnp.asarray(mask)
    )
    dense = jit(dot_product_attention)(q, k, v, mask=jnp.asarray(visible)[:, None])
    np.testing.assert_allclose(out, dense, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[0, 10], v[0].mean(0), rtol=1e-5, atol=1e-6)
    assert np.isfinite(np.asarray(out)).all()


def test_bfloat16_close_to_float32_reference() -> None:
    t = 48
    q, k, v = _qkv(t, seed=5)
    mask = _padding_mask(t)
    qb, kb, vb = (x.astype(jnp.bfloat16) for x in (q, k, v))
    out = jit(functools.partial(local_attention, radius=5, num_global=2, causal=True))(
        qb, kb, vb, mask=jnp.asarray(mask)
    )
    assert out.dtype == jnp.bfloat16 and out.shape == (B, t, H, D)
    ref = ref_attention(qb, kb, vb, dense_mask(t, 5, 2, True, mask))
    np.testing.assert_allclose(np.asarray(out, np.float32), ref, rtol=2e-2, atol=2e-2)


def test_jit_with_traced_mask() -> None:
    t = 12
    q, k, v = _qkv(t, seed=9)
    mask = _padding_mask(t)
    f = jax.jit(functools.partial(local_attention, radius=2, num_global=1, causal=True))
    ref = ref_attention(q, k, v, dense_mask(t, 2, 1, True, mask))
    np.testing.assert_allclose(f(q, k, v, mask=jnp.asarray(mask)), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("shapes", "kwargs"),
    [
        (((B, 8, H, D),) * 3, {"radius": -1}),
        (((B, 8, H, D),) * 3, {"radius": 2, "num_global": 9}),
        (((B, 8, H, D),) * 3, {"radius": 2, "num_global": -1}),
        (((B, 8, H, D),) * 3, {"radius": 2.5}),
        (((B, 8, H, D), (B, 9, H, D), (B, 9, H, D)), {"radius": 2}),
        (((B, 8, H, D), (B, 8, H, D), (B, 8, H, D + 1)), {"radius": 2}),
        (((B, 8, H * D),) * 3, {"radius": 2}),
        (((B, 8, H, D),) * 3, {"radius": 2, "mask": np.ones((B, 9), bool)}),
    ],
)
def test_invalid_arguments_raise(shapes, kwargs) -> None:
    q, k, v = (jnp.zeros(s, jnp.float32) for s in shapes)
    with pytest.raises(ValueError):
        local_attention(q, k, v, **kwargs)


def _big_avals(jaxpr: jex.core.Jaxpr, n: int) -> list[tuple[str, tuple[int, ...]]]:
    """Outputs of any equation (recursing into sub-jaxprs) with two or more axes of size >= n."""
    found = []
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            shape = getattr(var.aval, "shape", ())
            if sum(d >= n for d in shape) >= 2:
                found.append((str(eqn.primitive), shape))
        for param in eqn.params.values():
            subs = param if isinstance(param, list | tuple) else [param]
            for sub in subs:
                if isinstance(sub, jex.core.ClosedJaxpr):
                    found += _big_avals(sub.jaxpr, n)
                elif isinstance(sub, jex.core.Jaxpr):
                    found += _big_avals(sub, n)
    return found


def test_no_t_by_t_intermediate() -> None:
    t = 1024
    spec = jax.ShapeDtypeStruct((1, t, 2, 8), jnp.float32)
    mask = jax.ShapeDtypeStruct((1, t), jnp.bool_)
    f = functools.partial(local_attention, radius=16, num_global=2, causal=True)

    def loss(q, k, v, mask):
        return jnp.sum(f(q, k, v, mask=mask))

    for fn in (f, jax.grad(loss, argnums=(0, 1, 2))):
        args = (spec, spec, spec) if fn is f else (spec, spec, spec, mask)
        jaxpr = jax.make_jaxpr(fn)(*args)
        assert not _big_avals(jaxpr.jaxpr, t), _big_avals(jaxpr.jaxpr, t)
    # The detector can fail: the dense reference does build a T x T array.
    dense = jax.make_jaxpr(lambda q, k, v: ref_attention(q, k, v, np.ones((1, t, t), bool)))
    assert _big_avals(dense(spec, spec, spec).jaxpr, t)


@pytest.mark.parametrize(
    ("t", "radius", "num_global", "causal"),
    [(33, 3, 2, False), (33, 3, 0, True), (40, 20, 1, True), (7, 40, 3, False)],
)
def test_returned_band_scatters_to_the_dense_masked_softmax(
    t: int, radius: int, num_global: int, causal: bool
) -> None:
    """The band :func:`local_attention` returns, scattered by :func:`local_weights_to_dense`,
    equals the plain softmax under the band + global + causal + padding mask, row by row;
    rows with no visible key are zero; the output is the one without ``return_weights``."""
    q, k, v = _qkv(t, seed=t + radius)
    mask = _padding_mask(t)
    mask[1, : t // 2] = False  # batch 1: its first rows see no key once radius < t // 2
    f = functools.partial(local_attention, radius=radius, num_global=num_global, causal=causal)

    @jit
    def run(q, k, v, mask):
        out, weights = f(q, k, v, mask=mask, return_weights=True)
        return out, weights, local_weights_to_dense(weights), f(q, k, v, mask=mask)

    out, weights, dense, plain = run(q, k, v, jnp.asarray(mask))
    block = local_block_size(t, radius)
    assert weights.band.shape == (B, H, t, 3 * block + num_global)
    assert weights.global_rows.shape == (B, H, num_global, t)
    assert dense.shape == (B, H, t, t) and dense.dtype == jnp.float32
    np.testing.assert_array_equal(out, plain)

    visible = dense_mask(t, radius, num_global, causal, mask)  # [B, T, T]
    logits = np.einsum("bthd,bshd->bhts", q, k) / np.sqrt(D)
    logits = np.where(visible[:, None], logits, -np.inf)
    has_key = visible.any(-1)[:, None, :, None]  # [B, 1, T, 1]
    e = np.exp(logits - np.where(has_key, logits.max(-1, keepdims=True), 0.0))
    ref = np.where(has_key, e / np.where(has_key, e.sum(-1, keepdims=True), 1.0), 0.0)
    np.testing.assert_allclose(dense, ref, atol=1e-6)
    row_sums = np.where(has_key[..., 0], 1.0, 0.0)
    np.testing.assert_allclose(
        np.asarray(dense).sum(-1), np.broadcast_to(row_sums, (B, H, t)), atol=1e-6
    )
    assert (~has_key).any() or radius >= t // 2  # rows with no key are covered too
    # The band holds exactly the visible entries' probabilities: nothing is lost or doubled.
    total = np.asarray(weights.band).sum() + np.asarray(weights.global_rows).sum()
    np.testing.assert_allclose(total, ref.sum(), rtol=1e-6)
