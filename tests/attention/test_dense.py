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

B, T, S, H, D = 2, 5, 7, 3, 4


def _qkv(t: int = T, s: int = S, seed: int = 0, dtype=jnp.float32):
    kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
    q = jax.random.normal(kq, (B, t, H, D), dtype)
    k = jax.random.normal(kk, (B, s, H, D), dtype)
    v = jax.random.normal(kv, (B, s, H, D), dtype)
    return q, k, v


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
    "mask_broadcast": {"mask": _random_4d_mask()[:1, :1]},
    "bias": {"bias": np.random.default_rng(2).normal(size=(B, H, T, S)).astype(np.float32)},
    "bias_broadcast": {
        "bias": np.random.default_rng(3).normal(size=(1, H, 1, S)).astype(np.float32)
    },
    "mask_and_bias": {
        "mask": _padding_mask(),
        "bias": np.random.default_rng(4).normal(size=(B, H, T, S)).astype(np.float32),
    },
}


def _np(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


@pytest.mark.parametrize("case", list(CASES))
def test_matches_reference(case: str) -> None:
    q, k, v = _qkv()
    kwargs = CASES[case]
    out = dot_product_attention(q, k, v, **kwargs)
    assert out.shape == (B, T, H, D) and out.dtype == jnp.float32
    np.testing.assert_allclose(_np(out), _np(ref_attention(q, k, v, **kwargs)), atol=1e-5)
    weights = attention_weights(q, k, **kwargs)
    assert weights.shape == (B, H, T, S) and weights.dtype == jnp.float32
    np.testing.assert_allclose(_np(weights), _np(ref_weights(q, k, **kwargs)), atol=1e-6)


def test_reference_is_not_trivial() -> None:
    """Guard: the cases above are distinguishable (mask and bias change the result)."""
    q, k, v = _qkv()
    plain = _np(ref_attention(q, k, v))
    for case, kwargs in CASES.items():
        if case != "plain":
            assert np.abs(_np(ref_attention(q, k, v, **kwargs)) - plain).max() > 1e-2, case


def test_key_padding_mask_zeroes_padded_keys() -> None:
    q, k, _ = _qkv()
    mask = _padding_mask()
    weights = np.asarray(attention_weights(q, k, mask=mask))
    assert np.all(weights[~np.broadcast_to(mask[:, None, None, :], weights.shape)] == 0.0)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)


@pytest.mark.parametrize("t", [T, S])
def test_causal(t: int) -> None:
    """Self-attention (T == S) and T != S: query i sees keys j <= i."""
    q, k, v = _qkv(t=t)
    out = dot_product_attention(q, k, v, causal=True)
    np.testing.assert_allclose(_np(out), _np(ref_attention(q, k, v, causal=True)), atol=1e-5)
    weights = np.asarray(attention_weights(q, k, causal=True))
    assert np.all(np.triu(weights, k=1) == 0.0)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)
    # The first query sees only the first key.
    np.testing.assert_allclose(_np(out[:, 0]), _np(v[:, 0]), atol=1e-6)


def test_causal_with_padding_mask() -> None:
    q, k, v = _qkv(t=S)
    mask = _padding_mask()
    out = dot_product_attention(q, k, v, mask=mask, causal=True)
    ref = ref_attention(q, k, v, mask=mask, causal=True)
    np.testing.assert_allclose(_np(out), _np(ref), atol=1e-5)


@pytest.mark.parametrize("t,s", [(3, 9), (9, 2)])
def test_cross_attention_lengths(t: int, s: int) -> None:
    q, k, v = _qkv(t=t, s=s)
    mask = np.ones((B, s), bool)
    mask[0, -1] = False
    out = dot_product_attention(q, k, v, mask=mask)
    assert out.shape == (B, t, H, D)
    np.testing.assert_allclose(_np(out), _np(ref_attention(q, k, v, mask=mask)), atol=1e-5)
    weights = attention_weights(q, k, mask=mask)
    assert weights.shape == (B, H, t, s)
    np.testing.assert_allclose(
        _np(jnp.einsum("bhts,bshd->bthd", weights, v)), _np(out), atol=1e-5
    )


def test_fully_masked_rows_are_mean_of_v() -> None:
    q, k, v = _qkv()
    mask = np.ones((B, S), bool)
    mask[1] = False  # the whole second example sees nothing
    out = np.asarray(dot_product_attention(q, k, v, mask=mask))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[1], np.broadcast_to(np.mean(v[1], axis=0), out[1].shape), atol=1e-6)
    np.testing.assert_allclose(_np(out[0]), _np(ref_attention(q, k, v)[0]), atol=1e-5)
    weights = np.asarray(attention_weights(q, k, mask=mask))
    assert np.isfinite(weights).all()
    np.testing.assert_allclose(weights[1], 1.0 / S, atol=1e-7)

    # Row-wise: a 4-D mask that blanks one query row only.
    mask4 = np.ones((B, H, T, S), bool)
    mask4[0, 1, 2] = False
    out4 = np.asarray(dot_product_attention(q, k, v, mask=mask4))
    np.testing.assert_allclose(out4[0, 2, 1], np.mean(v[0, :, 1], axis=0), atol=1e-6)

    grads = jax.grad(lambda q, k, v: dot_product_attention(q, k, v, mask=mask).sum(), (0, 1, 2))(
        q, k, v
    )
    assert all(np.isfinite(np.asarray(g)).all() for g in grads)


@pytest.mark.parametrize("case", ["plain", "padding", "mask4d", "mask_and_bias"])
@pytest.mark.parametrize("causal", [False, True])
def test_gradients_match_reference(case: str, causal: bool) -> None:
    q, k, v = _qkv(t=S)
    kwargs = dict(CASES[case])
    if "mask" in kwargs and kwargs["mask"].ndim == 4:
        kwargs["mask"] = _random_4d_mask(t=S)
    if "bias" in kwargs:
        kwargs["bias"] = np.random.default_rng(5).normal(size=(B, H, S, S)).astype(np.float32)
    cotangent = jax.random.normal(jax.random.key(9), (B, S, H, D))

    def loss(fn, q, k, v):
        return jnp.sum(fn(q, k, v, causal=causal, **kwargs) * cotangent)

    got = jax.grad(functools.partial(loss, dot_product_attention), (0, 1, 2))(q, k, v)
    want = jax.grad(functools.partial(loss, ref_attention), (0, 1, 2))(q, k, v)
    for name, g, w in zip("qkv", got, want, strict=True):
        assert np.abs(_np(w)).max() > 1e-3, name
        np.testing.assert_allclose(_np(g), _np(w), atol=1e-5, err_msg=f"grad wrt {name}")


def test_attention_weights_gradient_matches_reference() -> None:
    q, k, _ = _qkv()
    mask = _padding_mask()
    cot = jax.random.normal(jax.random.key(3), (B, H, T, S))
    got = jax.grad(lambda q, k: jnp.sum(attention_weights(q, k, mask=mask) * cot), (0, 1))(q, k)
    want = jax.grad(lambda q, k: jnp.sum(ref_weights(q, k, mask=mask) * cot), (0, 1))(q, k)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(_np(g), _np(w), atol=1e-5)


def test_jit() -> None:
    q, k, v = _qkv()
    mask = _padding_mask()
    bias = CASES["bias"]["bias"]
    fn = jax.jit(functools.partial(dot_product_attention, causal=False))
    out = fn(q, k, v, mask=mask, bias=bias)
    ref = ref_attention(q, k, v, mask=mask, bias=bias)
    np.testing.assert_allclose(_np(out), _np(ref), atol=1e-5)
    weights = jax.jit(attention_weights, static_argnames="causal")(q, k, mask=mask, causal=True)
    np.testing.assert_allclose(
        _np(weights), _np(ref_weights(q, k, mask=mask, causal=True)), atol=1e-6
    )


def test_bad_shapes_raise() -> None:
    q, k, v = _qkv()
    with pytest.raises(AssertionError, match="rank"):
        dot_product_attention(q[0], k, v)  # q is 3-D
    with pytest.raises(AssertionError):
        dot_product_attention(q, k, v[:, :-1])  # k and v lengths differ
    with pytest.raises(AssertionError):
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
    q, k, v = _qkv(t=S)
    mask = _padding_mask()
    bq, bk, bv = (x.astype(jnp.bfloat16) for x in (q, k, v))
    ref = _np(ref_attention(q, k, v, mask=mask, causal=True))
    out = dot_product_attention(bq, bk, bv, mask=mask, causal=True)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(_np(out.astype(jnp.float32)), ref, atol=5e-2, rtol=5e-2)
    weights = attention_weights(bq, bk, mask=mask, causal=True)
    assert weights.dtype == jnp.float32
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    grads = jax.grad(
        lambda q: dot_product_attention(q, bk, bv, mask=mask).astype(jnp.float32).sum()
    )(bq)
    assert grads.dtype == jnp.bfloat16 and np.isfinite(_np(grads.astype(jnp.float32))).all()
