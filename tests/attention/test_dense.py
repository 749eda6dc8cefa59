"""Tests for :mod:`mmtx.attention.dense` against a plain, explicit softmax-attention reference.

The reference builds the logits with ``jnp.einsum``, applies the mask by zeroing the
exponentials (not by adding a large negative number, as the library does), and handles a
query row with no visible key explicitly (uniform weights). It is written in ``jnp`` so that
it can be differentiated too.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmtx.attention import attention_weights, dot_product_attention

# These programs are tiny: a quick compile matters more than fast code.
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})

B, T, S, H, D = 2, 5, 7, 3, 4


def _normal(shape: tuple[int, ...], seed: int) -> jnp.ndarray:
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _qkv(t: int = T, s: int = S, seed: int = 0) -> tuple[jnp.ndarray, ...]:
    return (
        _normal((B, t, H, D), seed),
        _normal((B, s, H, D), seed + 1),
        _normal((B, s, H, D), seed + 2),
    )


def _full_mask(t: int, s: int, mask=None, causal: bool = False) -> jnp.ndarray:
    """[B, H, T, S] bool, True = attend."""
    full = jnp.ones((B, H, t, s), dtype=bool)
    if mask is not None:
        mask = jnp.asarray(mask, bool)
        if mask.ndim == 2:  # key padding [B, S]
            mask = mask[:, None, None, :]
        full = full & mask
    if causal:
        i = jnp.arange(t)[:, None]
        j = jnp.arange(s)[None, :]
        full = full & (j <= i)
    return full


def ref_weights(q, k, *, mask=None, bias=None, causal=False) -> jnp.ndarray:
    """Plain softmax over the visible keys; a row with no visible key is uniform. [B,H,T,S]."""
    q = q.astype(jnp.float32)
    k = k.astype(jnp.float32)
    t, s = q.shape[1], k.shape[1]
    logits = jnp.einsum("bthd,bshd->bhts", q, k, precision="highest") / np.sqrt(q.shape[-1])
    if bias is not None:
        logits = logits + bias
    visible = _full_mask(t, s, mask, causal)
    row_max = jnp.max(jnp.where(visible, logits, -jnp.inf), axis=-1, keepdims=True)
    row_max = jax.lax.stop_gradient(jnp.where(jnp.isfinite(row_max), row_max, 0.0))
    e = jnp.where(visible, jnp.exp(logits - row_max), 0.0)
    total = e.sum(-1, keepdims=True)
    any_visible = visible.any(-1, keepdims=True)
    return jnp.where(any_visible, e / jnp.where(any_visible, total, 1.0), 1.0 / s)


def ref_attention(q, k, v, *, mask=None, bias=None, causal=False) -> jnp.ndarray:
    w = ref_weights(q, k, mask=mask, bias=bias, causal=causal)
    return jnp.einsum("bhts,bshd->bthd", w, v.astype(jnp.float32), precision="highest")


def _padding_mask(s: int = S) -> np.ndarray:
    mask = np.ones((B, s), bool)
    mask[0, s - 3 :] = False
    mask[1, s - 1 :] = False
    return mask


def _random_4d_mask(t: int = T, s: int = S, seed: int = 1) -> np.ndarray:
    mask = np.random.default_rng(seed).random((B, H, t, s)) < 0.6
    mask[..., 0] = True  # every row sees at least one key
    return mask


CASES = {
    "plain": {},
    "padding": {"mask": _padding_mask()},
    "mask4d": {"mask": _random_4d_mask()},
    "bias": {"bias": np.random.default_rng(2).normal(size=(B, H, T, S)).astype(np.float32)},
    "broadcast": {  # mask and bias broadcast over batch, heads and queries
        "mask": _random_4d_mask()[:1, :1, :1],
        "bias": np.random.default_rng(3).normal(size=(1, H, 1, S)).astype(np.float32),
    },
    "mask_and_bias": {
        "mask": _padding_mask(),
        "bias": np.random.default_rng(4).normal(size=(B, H, T, S)).astype(np.float32),
    },
}


def _np(x) -> np.ndarray:
    return np.asarray(jnp.asarray(x, jnp.float32), dtype=np.float64)


@functools.partial(jit, static_argnames="causal")
def _evaluate(q, k, v, cotangent, mask=None, bias=None, causal=False) -> dict:
    """Library and reference outputs, weights and gradients, in one compiled function."""
    kwargs = dict(mask=mask, bias=bias, causal=causal)

    def loss(fn, q, k, v):
        return jnp.sum(fn(q, k, v, **kwargs).astype(jnp.float32) * cotangent)

    return {
        "out": dot_product_attention(q, k, v, **kwargs),
        "ref_out": ref_attention(q, k, v, **kwargs),
        "weights": attention_weights(q, k, **kwargs),
        "ref_weights": ref_weights(q, k, **kwargs),
        "grads": jax.grad(functools.partial(loss, dot_product_attention), (0, 1, 2))(q, k, v),
        "ref_grads": jax.grad(functools.partial(loss, ref_attention), (0, 1, 2))(q, k, v),
    }


def _check(q, k, v, **kwargs) -> dict:
    """Compares values, weights and gradients wrt q, k, v with the reference."""
    cotangent = _normal(q.shape, 9)
    r = _evaluate(q, k, v, cotangent, **kwargs)
    assert r["out"].shape == q.shape and r["out"].dtype == q.dtype
    assert r["weights"].shape == (q.shape[0], H, q.shape[1], k.shape[1])
    assert r["weights"].dtype == jnp.float32
    np.testing.assert_allclose(_np(r["out"]), _np(r["ref_out"]), atol=1e-5)
    np.testing.assert_allclose(_np(r["weights"]), _np(r["ref_weights"]), atol=1e-6)
    for name, g, w in zip("qkv", r["grads"], r["ref_grads"], strict=True):
        np.testing.assert_allclose(_np(g), _np(w), atol=1e-5, err_msg=f"grad wrt {name}")
    return r


@pytest.mark.parametrize("case", list(CASES))
def test_matches_reference(case: str) -> None:
    q, k, v = _qkv()
    r = _check(q, k, v, **CASES[case])
    assert np.abs(_np(r["ref_grads"][1])).max() > 1e-3  # the key gradient is not trivially 0


def test_cases_are_distinguishable() -> None:
    """Guard against a vacuous comparison: every mask and bias changes the reference."""
    q, k, v = _qkv()
    cotangent = jnp.zeros(q.shape)
    plain = _np(_evaluate(q, k, v, cotangent)["ref_out"])
    for case, kwargs in CASES.items():
        if case != "plain":
            ref = _np(_evaluate(q, k, v, cotangent, **kwargs)["ref_out"])
            assert np.abs(ref - plain).max() > 1e-2, case


def test_key_padding_mask_zeroes_padded_keys() -> None:
    q, k, v = _qkv()
    mask = _padding_mask()
    weights = np.asarray(_check(q, k, v, mask=mask)["weights"])
    assert np.all(weights[~np.broadcast_to(mask[:, None, None, :], weights.shape)] == 0.0)
    assert np.all(weights[np.broadcast_to(mask[:, None, None, :], weights.shape)] > 0.0)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)


@pytest.mark.parametrize("t", [T, S])
def test_causal(t: int) -> None:
    """Self-attention (T == S) and T != S: query i sees keys j <= i; also with padding."""
    q, k, v = _qkv(t=t)
    r = _check(q, k, v, causal=True)
    weights = np.asarray(r["weights"])
    assert np.all(np.triu(weights, k=1) == 0.0)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)
    # The first query sees only the first key.
    np.testing.assert_allclose(_np(r["out"][:, 0]), _np(v[:, 0]), atol=1e-6)
    if t == S:
        _check(q, k, v, mask=_padding_mask(), causal=True)


@pytest.mark.parametrize("t,s", [(3, 9), (9, 2)])
def test_cross_attention_lengths(t: int, s: int) -> None:
    q, k, v = _qkv(t=t, s=s)
    mask = np.ones((B, s), bool)
    mask[0, -1] = False
    r = _check(q, k, v, mask=mask)
    np.testing.assert_allclose(
        np.einsum("bhts,bshd->bthd", _np(r["weights"]), _np(v)), _np(r["out"]), atol=1e-5
    )


def test_fully_masked_rows_are_mean_of_v() -> None:
    q, k, v = _qkv()
    mask = np.ones((B, S), bool)
    mask[1] = False  # the whole second example sees nothing
    r = _check(q, k, v, mask=mask)
    out, weights = np.asarray(r["out"]), np.asarray(r["weights"])
    assert np.isfinite(out).all() and np.isfinite(weights).all()
    assert all(np.isfinite(np.asarray(g)).all() for g in r["grads"])
    np.testing.assert_allclose(out[1], np.broadcast_to(np.mean(v[1], 0), out[1].shape), atol=1e-6)
    np.testing.assert_allclose(weights[1], 1.0 / S, atol=1e-7)
    plain = _evaluate(q, k, v, jnp.zeros(q.shape))["ref_out"]
    np.testing.assert_allclose(_np(out[0]), _np(plain[0]), atol=1e-5)

    # Row-wise: a 4-D mask that blanks a single query row of one head.
    mask4 = _random_4d_mask()
    mask4[0, 1, 2] = False
    out4 = np.asarray(_check(q, k, v, mask=mask4)["out"])
    np.testing.assert_allclose(out4[0, 2, 1], np.mean(v[0, :, 1], axis=0), atol=1e-6)


def test_jit_matches_eager() -> None:
    """Everything above runs under ``jax.jit``; the eager path gives the same numbers."""
    q, k, v = _qkv()
    mask = _padding_mask()
    eager = dot_product_attention(q, k, v, mask=mask)
    jitted = jax.jit(dot_product_attention)(q, k, v, mask=mask)
    np.testing.assert_allclose(_np(eager), _np(jitted), atol=1e-6)


def test_bad_shapes_raise() -> None:
    q, k, v = _qkv()
    with pytest.raises(AssertionError, match="rank"):
        dot_product_attention(q[0], k, v)  # q is 3-D
    with pytest.raises(AssertionError, match="different shapes"):
        dot_product_attention(q, k, v[:, :-1])  # k and v lengths differ
    with pytest.raises(AssertionError, match="different shape prefixes"):
        dot_product_attention(q[:1], k, v)  # batch mismatch
    with pytest.raises(ValueError, match="heads"):
        dot_product_attention(q[:, :, :2], k, v)  # head count mismatch
    with pytest.raises(ValueError, match="head_dim"):
        dot_product_attention(q[..., :2], k, v)  # head_dim mismatch
    with pytest.raises(ValueError, match="mask"):
        dot_product_attention(q, k, v, mask=np.ones((B, T, S), bool))  # 3-D mask
    with pytest.raises(AssertionError, match="rank"):
        attention_weights(q[0], k)


def test_bfloat16() -> None:
    """bfloat16 in, bfloat16 out, close to the float32 reference (softmax in float32)."""
    q, k, v = _qkv(t=S)
    mask = _padding_mask()
    r32 = _check(q, k, v, mask=mask, causal=True)
    bq, bk, bv = (x.astype(jnp.bfloat16) for x in (q, k, v))
    cotangent = _normal(q.shape, 9)
    r16 = _evaluate(bq, bk, bv, cotangent, mask=mask, causal=True)
    assert r16["out"].dtype == jnp.bfloat16
    assert r16["weights"].dtype == jnp.float32
    np.testing.assert_allclose(_np(r16["out"]), _np(r32["ref_out"]), atol=3e-2, rtol=3e-2)
    np.testing.assert_allclose(_np(r16["weights"]), _np(r32["ref_weights"]), atol=2e-2)
    np.testing.assert_allclose(_np(r16["weights"]).sum(-1), 1.0, atol=1e-5)
    for g16, g32 in zip(r16["grads"], r32["ref_grads"], strict=True):
        assert g16.dtype == jnp.bfloat16
        np.testing.assert_allclose(_np(g16), _np(g32), atol=1e-1, rtol=5e-2)


@pytest.mark.parametrize("case", ["padding", "mask_and_bias"])
def test_return_weights_gives_the_applied_probabilities(case: str) -> None:
    """``return_weights=True``: the reference softmax, summing to one over the visible keys,
    and an output (and gradients) equal to the fused path's."""
    q, k, v = _qkv()
    kwargs = CASES[case]
    cotangent = _normal(q.shape, 9)

    @jit
    def run(q, k, v):
        def loss(return_weights, q, k, v):
            result = dot_product_attention(q, k, v, return_weights=return_weights, **kwargs)
            out = result[0] if return_weights else result
            return jnp.sum(out * cotangent), result

        grads, (out, weights) = jax.grad(functools.partial(loss, True), (0, 1, 2), has_aux=True)(
            q, k, v
        )
        fused_grads, fused = jax.grad(functools.partial(loss, False), (0, 1, 2), has_aux=True)(
            q, k, v
        )
        return out, weights, grads, fused, fused_grads, ref_weights(q, k, **kwargs)

    out, weights, grads, fused, fused_grads, ref = run(q, k, v)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert weights.shape == (B, H, T, S) and weights.dtype == jnp.float32
    np.testing.assert_allclose(_np(weights), _np(ref), atol=1e-6)
    visible = np.broadcast_to(np.asarray(_full_mask(T, S, kwargs.get("mask"))), weights.shape)
    assert np.all(np.asarray(weights)[~visible] == 0.0)
    np.testing.assert_allclose(np.asarray(weights).sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(
        np.einsum("bhts,bshd->bthd", _np(weights), _np(v)), _np(out), atol=1e-5
    )
    np.testing.assert_allclose(_np(out), _np(fused), atol=1e-5)
    for name, g, w in zip("qkv", grads, fused_grads, strict=True):
        np.testing.assert_allclose(_np(g), _np(w), atol=1e-5, err_msg=f"grad wrt {name}")
