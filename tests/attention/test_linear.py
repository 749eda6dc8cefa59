"""Tests for :mod:`mmtx.attention.linear` against plain, explicit references.

The references build the full ``[B, H, T, S]`` kernel matrix ``A_ij = phi(q_i) . phi(k_j)``
(lower-triangular when causal, padded keys zeroed), normalise its rows and multiply ``v``;
FAVOR+ is also compared with exact softmax attention (``jax.nn.softmax``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmtx.attention.linear import (
    favor_features,
    favor_projection,
    linear_attention,
)

# These programs are tiny: a quick compile matters more than fast code.
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})

# Jitted kernel for the value checks (eager op-by-op dispatch would compile far more).
la = jit(linear_attention, static_argnames=("feature_map", "num_features", "causal", "chunk_size"))

B, T, S, H, D = 2, 37, 23, 2, 8
CHUNK = 8  # T=37 is not a multiple: 5 chunks, the last one padded
TOL = {"rtol": 2e-5, "atol": 2e-6}


def _normal(shape: tuple[int, ...], seed: int, scale: float = 1.0) -> jnp.ndarray:
    return jnp.asarray(scale * np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _qkv(t: int = T, s: int = T, seed: int = 0, scale: float = 1.0) -> tuple[jnp.ndarray, ...]:
    return (
        _normal((B, t, H, D), seed, scale),
        _normal((B, s, H, D), seed + 1, scale),
        _normal((B, s, H, D), seed + 2),
    )


def _key_mask(s: int) -> jnp.ndarray:
    """[B, S]: batch 0 unpadded, batch 1 with its last third padded (key 0 always real)."""
    mask = np.ones((B, s), dtype=bool)
    mask[1, s - s // 3 :] = False
    mask[1, 2] = False  # an interior hole too
    return jnp.asarray(mask)


def _elu_phi(x: jnp.ndarray) -> jnp.ndarray:
    return jnp.where(x > 0, x + 1.0, jnp.exp(x))  # elu(x) + 1, written out


def ref_from_features(phi_q, phi_k, v, *, mask=None, causal=False) -> jnp.ndarray:
    """Explicit [B, H, T, S] kernel matrix, masked, row-normalised, times v."""
    a = jnp.einsum("bthm,bshm->bhts", phi_q, phi_k, precision="highest")
    t, s = a.shape[-2:]
    if mask is not None:
        a = jnp.where(mask[:, None, None, :], a, 0.0)
    if causal:
        a = jnp.where(jnp.arange(s)[None, :] <= jnp.arange(t)[:, None], a, 0.0)
    a = a / jnp.sum(a, axis=-1, keepdims=True)
    return jnp.einsum("bhts,bshd->bthd", a, v, precision="highest")


def ref_elu(q, k, v, *, mask=None, causal=False) -> jnp.ndarray:
    return ref_from_features(_elu_phi(q), _elu_phi(k), v, mask=mask, causal=causal)


def ref_softmax(q, k, v) -> jnp.ndarray:
    logits = jnp.einsum("bthd,bshd->bhts", q, k, precision="highest") / np.sqrt(q.shape[-1])
    return jnp.einsum("bhts,bshd->bthd", jax.nn.softmax(logits, axis=-1), v, precision="highest")


def _grads(fn, q, k, v, seed: int = 99):
    proj = _normal(q.shape[:3] + v.shape[3:], seed)
    return jax.grad(lambda *a: jnp.sum(fn(*a) * proj), argnums=(0, 1, 2))(q, k, v)


def _assert_close_with_grads(fn, ref, q, k, v, tol=TOL):
    both = jit(
        lambda q, k, v: (fn(q, k, v), ref(q, k, v), _grads(fn, q, k, v), _grads(ref, q, k, v))
    )
    out, out_ref, grads, grads_ref = both(q, k, v)
    np.testing.assert_allclose(out, out_ref, **tol)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        assert np.all(np.isfinite(g))
        np.testing.assert_allclose(g, g_ref, **tol)


# ---------------------------------------------------------------------------- elu


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_elu_matches_explicit_reference(causal: bool, masked: bool) -> None:
    s = T if causal else S  # cross-attention S != T when not causal
    q, k, v = _qkv(T, s)
    mask = _key_mask(s) if masked else None
    fn = functools.partial(
        linear_attention, feature_map="elu", causal=causal, mask=mask, chunk_size=CHUNK
    )
    ref = functools.partial(ref_elu, mask=mask, causal=causal)
    _assert_close_with_grads(fn, ref, q, k, v)


def test_elu_causal_independent_of_chunk_size_and_future() -> None:
    q, k, v = _qkv()
    outs = [la(q, k, v, causal=True, chunk_size=c) for c in (1, 5, 8, 64)]
    for out in outs[1:]:
        np.testing.assert_allclose(out, outs[0], **TOL)
    # Changing the last key/value leaves every earlier output untouched.
    k2 = k.at[:, -1].set(5.0)
    v2 = v.at[:, -1].set(-5.0)
    out2 = la(q, k2, v2, causal=True, chunk_size=CHUNK)
    np.testing.assert_allclose(out2[:, :-1], outs[0][:, :-1], **TOL)
    assert not np.allclose(out2[:, -1], outs[0][:, -1])


def test_masked_keys_contribute_nothing() -> None:
    q, k, v = _qkv(T, S)
    mask = _key_mask(S)
    out = la(q, k, v, mask=mask)
    # Garbage (even NaN) in padded keys/values changes nothing.
    pad = ~mask[:, :, None, None]
    k_bad = jnp.where(pad, jnp.nan, k)
    v_bad = jnp.where(pad, 1e6, v)
    np.testing.assert_allclose(la(q, k_bad, v_bad, mask=mask), out, **TOL)
    rng = jax.random.key(0)
    out_f = la(q, k, v, mask=mask, feature_map="favor", rng=rng)
    out_f_bad = la(q, k_bad, v_bad, mask=mask, feature_map="favor", rng=rng)
    np.testing.assert_allclose(out_f_bad, out_f, **TOL)


# ---------------------------------------------------------------------------- favor


def test_favor_projection_structure() -> None:
    w = np.asarray(jit(favor_projection, static_argnums=(1, 2))(jax.random.key(3), 20, D))
    assert w.shape == (20, D)
    for start in (0, D):  # full blocks: mutually orthogonal rows
        block = w[start : start + D]
        gram = block @ block.T
        np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0.0, atol=1e-4)
    assert np.all(np.linalg.norm(w, axis=1) > 0)


def test_favor_deterministic_given_rng() -> None:
    q, k, v = _qkv(T, S)
    f = functools.partial(la, feature_map="favor", num_features=32)
    a = f(q, k, v, rng=jax.random.key(1))
    np.testing.assert_array_equal(a, f(q, k, v, rng=jax.random.key(1)))
    assert not np.allclose(a, f(q, k, v, rng=jax.random.key(2)))


def test_favor_error_falls_with_num_features() -> None:
    q, k, v = _qkv(48, 48, seed=5, scale=0.5)
    exact = ref_softmax(q, k, v)
    rngs = jax.random.split(jax.random.key(0), 4)
    errors = []
    for m in (16, 64, 256):

        @jit
        def mean_rel_err(rngs, m=m):
            def one(rng):
                out = linear_attention(q, k, v, feature_map="favor", num_features=m, rng=rng)
                return jnp.linalg.norm(out - exact) / jnp.linalg.norm(exact)

            return jnp.mean(jax.vmap(one)(rngs))

        errors.append(float(mean_rel_err(rngs)))
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.15, errors
    # The elu kernel is a different attention altogether: far worse than FAVOR+ at m=256.
    elu_err = float(jnp.linalg.norm(la(q, k, v) - exact) / jnp.linalg.norm(exact))
    assert errors[2] < elu_err


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_favor_matches_explicit_reference_same_features(causal: bool, masked: bool) -> None:
    s = T if causal else S
    q, k, v = _qkv(T, s, seed=7)
    mask = _key_mask(s) if masked else None
    rng, m = jax.random.key(4), 24
    fn = functools.partial(
        linear_attention,
        feature_map="favor",
        num_features=m,
        rng=rng,
        causal=causal,
        mask=mask,
        chunk_size=CHUNK,
    )

    def ref(q, k, v):
        w = favor_projection(rng, m, D)
        phi_q = favor_features(q, w, is_query=True)
        phi_k = favor_features(k, w, is_query=False, mask=mask)
        return ref_from_features(phi_q, phi_k, v, mask=mask, causal=causal)

    _assert_close_with_grads(fn, ref, q, k, v, tol={"rtol": 1e-4, "atol": 1e-5})


def test_favor_large_inputs_do_not_overflow() -> None:
    q, k, v = _qkv(T, T, scale=30.0)
    for causal in (False, True):
        out = la(q, k, v, feature_map="favor", rng=jax.random.key(0), causal=causal)
        assert np.all(np.isfinite(out))


# ---------------------------------------------------------------------------- dtypes, jit, errors


@pytest.mark.parametrize("feature_map", ["elu", "favor"])
def test_bfloat16(feature_map: str) -> None:
    q, k, v = (x.astype(jnp.bfloat16) for x in _qkv())
    f = functools.partial(
        linear_attention, feature_map=feature_map, rng=jax.random.key(0), causal=True, chunk_size=8
    )
    out = jit(f)(q, k, v)
    assert out.dtype == jnp.bfloat16
    ref = jit(f)(*(x.astype(jnp.float32) for x in (q, k, v)))
    np.testing.assert_allclose(out.astype(jnp.float32), ref, atol=2e-2, rtol=2e-2)


def test_jit() -> None:
    q, k, v = _qkv()
    mask = _key_mask(T)
    rng = jax.random.key(0)
    for feature_map in ("elu", "favor"):
        f = functools.partial(
            linear_attention, feature_map=feature_map, causal=True, chunk_size=CHUNK
        )
        out = jax.jit(f)(q, k, v, rng=rng, mask=mask)
        expected = la(
            q, k, v, feature_map=feature_map, causal=True, chunk_size=CHUNK, rng=rng, mask=mask
        )
        np.testing.assert_allclose(out, expected, **TOL)


def test_bad_args_raise() -> None:
    q, k, v = _qkv(T, S)
    with pytest.raises(ValueError, match="feature_map"):
        linear_attention(q, k, v, feature_map="relu")
    with pytest.raises(ValueError, match="rng"):
        linear_attention(q, k, v, feature_map="favor")
    with pytest.raises(ValueError, match="S == T"):
        linear_attention(q, k, v, causal=True)
    with pytest.raises(ValueError, match="mask"):
        linear_attention(q, k, v, mask=jnp.ones((B, T), bool))
    with pytest.raises(ValueError, match="chunk_size"):
        linear_attention(q, q, q, causal=True, chunk_size=0)
    with pytest.raises(ValueError, match="num_features"):
        linear_attention(q, k, v, feature_map="favor", rng=jax.random.key(0), num_features=0)


@pytest.mark.parametrize("feature_map", ["elu", "favor"])
def test_return_weights_raises(feature_map: str) -> None:
    q, k, v = _qkv(T, S)
    with pytest.raises(ValueError, match="linear attention forms no attention map"):
        linear_attention(
            q, k, v, feature_map=feature_map, rng=jax.random.key(0), return_weights=True
        )


# ---------------------------------------------------------------------------- memory


def _big_avals(jaxpr, limit: int) -> list:
    """Every aval (recursively, through sub-jaxprs) with two or more dims >= limit."""
    found = []
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            shape = getattr(var.aval, "shape", ())
            if sum(d >= limit for d in shape) >= 2:
                found.append((eqn.primitive.name, shape))
        for param in eqn.params.values():
            subs = param if isinstance(param, list | tuple) else [param]
            for sub in subs:
                if hasattr(sub, "eqns"):
                    found += _big_avals(sub, limit)
                elif hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
                    found += _big_avals(sub.jaxpr, limit)
    return found


@pytest.mark.parametrize("feature_map", ["elu", "favor"])
def test_causal_has_no_t_by_t_intermediate(feature_map: str) -> None:
    t = 2048
    x = jax.ShapeDtypeStruct((1, t, 1, 8), jnp.float32)
    f = functools.partial(
        linear_attention, feature_map=feature_map, rng=jax.random.key(0), causal=True
    )
    loss = lambda q, k, v: jnp.sum(f(q, k, v))
    for fn in (f, jax.grad(loss, argnums=(0, 1, 2))):
        jaxpr = jax.make_jaxpr(fn)(x, x, x).jaxpr
        assert _big_avals(jaxpr, t) == []
    # The walker does catch the quadratic reference.
    ref = jax.make_jaxpr(functools.partial(ref_elu, causal=True))(x, x, x).jaxpr
    assert _big_avals(ref, t)
