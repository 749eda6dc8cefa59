"""Tests for mmtx.encoders.text.TextEncoder."""

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import SHIFT_INVARIANT, random_params

from mmtx.encoders import TextEncoder

B, T, D, VOCAB = 2, 8, 16, 50
# The attention key bias shifts every logit of a query row equally; softmax is invariant to
# that, so its gradient is exactly zero by construction.


def tokens_and_mask():
    tokens = np.array([[5, 9, 13, 7, 21, 0, 0, 0], [3, 4, 0, 0, 0, 0, 0, 0]], np.int32)
    return jnp.asarray(tokens), jnp.asarray(tokens != 0)


@functools.cache
def built(pooling, position_embedding, dtype=jnp.float32):
    encoder = TextEncoder(
        vocab_size=VOCAB, max_length=T, width=D, depth=1, num_heads=2, mlp_dim=32,
        pooling=pooling, position_embedding=position_embedding, dtype=dtype,
    )  # fmt: skip
    params = random_params(encoder, *tokens_and_mask())
    return encoder, params, jax.jit(encoder.apply)


@pytest.mark.parametrize(
    "pooling,position_embedding,dtype",
    [
        ("cls", "learned", jnp.float32),
        ("mean", "sincos", jnp.float32),
        ("cls", "sincos", jnp.bfloat16),
    ],
)
def test_shapes_and_dtypes(pooling, position_embedding, dtype):
    tokens, mask = tokens_and_mask()
    _, params, apply = built(pooling, position_embedding, dtype)
    assert ("posemb" in params["params"]) == (position_embedding == "learned")
    assert ("cls" in params["params"]["tower"]) == (pooling == "cls")
    x, out = apply(params, tokens, mask)
    length = T + 1 if pooling == "cls" else T
    assert x.shape == (B, length, D) and x.dtype == dtype
    assert out["pooled"].shape == (B, D) and out["pooled"].dtype == dtype
    assert out["stem"].shape == (B, T, D)
    assert out["encoded"].shape == (B, length, D)
    assert out["mask"].shape == (B, length) and out["mask"].dtype == jnp.bool_
    np.testing.assert_array_equal(out["mask"][:, length - T :], mask)
    assert bool(jnp.all(jnp.isfinite(out["pooled"].astype(jnp.float32))))


def test_shorter_text_than_max_length():
    _, params, apply = built("mean", "sincos")
    tokens, mask = tokens_and_mask()
    x, out = apply(params, tokens[:, :5], mask[:, :5])
    assert x.shape == (B, 5, D) and out["pooled"].shape == (B, D)


@pytest.mark.parametrize("pooling,position_embedding", [("cls", "learned"), ("mean", "sincos")])
def test_padded_tokens_do_not_affect_pooled(pooling, position_embedding):
    tokens, mask = tokens_and_mask()
    _, params, apply = built(pooling, position_embedding)
    pooled = apply(params, tokens, mask)[1]["pooled"]
    other_ids = jnp.asarray(np.random.default_rng(1).integers(1, VOCAB, tokens.shape), jnp.int32)
    perturbed = jnp.where(mask, tokens, other_ids)  # same mask, different ids under the padding
    assert not np.array_equal(perturbed, tokens)
    np.testing.assert_array_equal(apply(params, perturbed, mask)[1]["pooled"], pooled)
    # A real token does change the pooled output of its row, and only of its row.
    changed = apply(params, tokens.at[0, 1].set(40), mask)[1]["pooled"]
    assert np.abs(changed[0] - pooled[0]).max() > 1e-3
    np.testing.assert_array_equal(changed[1], pooled[1])


def test_bad_inputs_raise():
    encoder, params, _ = built("cls", "learned")
    too_long = jnp.ones((B, T + 1), jnp.int32)
    with pytest.raises(ValueError, match="max_length"):
        jax.eval_shape(encoder.apply, params, too_long)
    with pytest.raises(TypeError, match="integer"):
        jax.eval_shape(encoder.apply, params, jnp.ones((B, T), jnp.float32))
    with pytest.raises(AssertionError):  # rank
        jax.eval_shape(encoder.apply, params, jnp.ones((B, T, 1), jnp.int32))


def test_gradients_reach_every_param():
    # cls + learned: the configuration with the most param leaves (mean pooling's gradient
    # is covered in test_tower.py).
    tokens, mask = tokens_and_mask()
    _, params, apply = built("cls", "learned")
    w = np.random.default_rng(3).normal(size=(B, D)).astype(np.float32)

    @jax.jit
    @jax.grad
    def grad(p):
        return jnp.sum(apply(p, tokens, mask)[1]["pooled"] * w)

    for path, g in jax.tree_util.tree_leaves_with_path(grad(params)):
        name = jax.tree_util.keystr(path)
        assert bool(jnp.all(jnp.isfinite(g))), f"non-finite gradient for {name}"
        if not any(s in name for s in SHIFT_INVARIANT):
            assert bool(jnp.any(g != 0)), f"zero gradient for {name}"


# ------------------------------------------------------------------ architecture options


@functools.cache
def built_with(**options):
    encoder = TextEncoder(
        vocab_size=VOCAB, max_length=T, width=D, depth=2, num_heads=2, mlp_dim=32, **options
    )
    tokens, mask = tokens_and_mask()
    shapes = jax.eval_shape(encoder.init, jax.random.key(0), tokens, mask)
    rng = np.random.default_rng(7)
    params = jax.tree.map(lambda s: jnp.asarray(0.3 * rng.normal(size=s.shape), s.dtype), shapes)
    return encoder, flax.linen.unbox(params), jax.jit(encoder.apply)


def test_eot_pooling_is_the_output_at_the_highest_token_id():
    _, params, apply = built_with(pooling="eot", causal=True)
    # Row 0's highest id (30) is at position 3, row 1's (49, twice) first at position 1.
    tokens = jnp.asarray([[5, 9, 13, 30, 21, 0, 0, 0], [3, 49, 49, 2, 0, 0, 0, 0]], jnp.int32)
    mask = tokens != 0
    x, out = apply(params, tokens, mask)
    assert x.shape == (B, T, D) and "cls" not in params["params"]["tower"]
    np.testing.assert_array_equal(np.asarray(out["pooled"][0]), np.asarray(x[0, 3]))
    np.testing.assert_array_equal(np.asarray(out["pooled"][1]), np.asarray(x[1, 1]))


def test_last_pooling_is_the_output_at_the_last_valid_position():
    _, params, apply = built_with(pooling="last")
    tokens, mask = tokens_and_mask()  # row 0: 5 real tokens, row 1: 2
    x, out = apply(params, tokens, mask)
    np.testing.assert_array_equal(np.asarray(out["pooled"][0]), np.asarray(x[0, 4]))
    np.testing.assert_array_equal(np.asarray(out["pooled"][1]), np.asarray(x[1, 1]))
    # With every position valid (SigLIP's padded text), it is the last position.
    _, full = apply(params, tokens, jnp.ones_like(mask))
    np.testing.assert_array_equal(np.asarray(full["pooled"]), np.asarray(full["encoded"][:, -1]))


def test_causal_text_tower_later_tokens_do_not_change_earlier_outputs():
    _, params, apply = built_with(pooling="eot", causal=True, pre_norm=True, activation="gelu")
    tokens = jnp.asarray([[5, 9, 13, 30, 21, 7, 8, 2], [3, 4, 6, 7, 8, 9, 10, 11]], jnp.int32)
    mask = jnp.ones_like(tokens, bool)
    x = apply(params, tokens, mask)[0]
    for t in range(1, T):
        changed = apply(params, tokens.at[:, t].set(1), mask)[0]
        np.testing.assert_allclose(np.asarray(changed[:, :t]), np.asarray(x[:, :t]), atol=1e-6)
        assert np.abs(np.asarray(changed[:, t]) - np.asarray(x[:, t])).max() > 1e-4
    # Without causal, the first token's output depends on the last token.
    _, bi_params, bi_apply = built_with(pooling="eot", pre_norm=True, activation="gelu")
    a = bi_apply(bi_params, tokens, mask)[0]
    b = bi_apply(bi_params, tokens.at[:, -1].set(1), mask)[0]
    assert np.abs(np.asarray(a[:, 0]) - np.asarray(b[:, 0])).max() > 1e-4


def test_eot_and_last_gradients_reach_every_param():
    tokens, mask = tokens_and_mask()
    w = np.random.default_rng(3).normal(size=(B, D)).astype(np.float32)
    for pooling in ("eot", "last"):
        _, params, apply = built_with(pooling=pooling, causal=True)

        def loss(p, apply=apply):
            return jnp.sum(apply(p, tokens, mask)[1]["pooled"] * w)

        for path, g in jax.tree_util.tree_leaves_with_path(jax.jit(jax.grad(loss))(params)):
            name = jax.tree_util.keystr(path)
            assert bool(jnp.all(jnp.isfinite(g))), name
            if not any(s in name for s in SHIFT_INVARIANT):
                assert bool(jnp.any(g != 0)), f"zero gradient for {name}"
