"""Tests for mmtx.encoders.text.TextEncoder."""

import functools

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
