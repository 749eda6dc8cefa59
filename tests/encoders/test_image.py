"""Tests for mmtx.encoders.image.ImageEncoder (ViT)."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import SHIFT_INVARIANT, random_params

from mmtx.encoders import ImageEncoder

B, SIZE, PATCH, D = 2, 16, 8, 16
N = (SIZE // PATCH) ** 2


def images(batch=B, seed=0):
    return jnp.asarray(
        np.random.default_rng(seed).uniform(size=(batch, SIZE, SIZE, 3)), jnp.float32
    )


@functools.cache
def built(pooling, position_embedding, dtype=jnp.float32):
    encoder = ImageEncoder(
        image_size=SIZE, patch_size=PATCH, width=D, depth=1, num_heads=2, mlp_dim=32,
        pooling=pooling, position_embedding=position_embedding, dtype=dtype,
    )  # fmt: skip
    return encoder, random_params(encoder, images()), jax.jit(encoder.apply)


@pytest.mark.parametrize(
    "pooling,position_embedding,dtype",
    [
        ("cls", "learned", jnp.float32),
        ("mean", "sincos", jnp.bfloat16),
    ],
)
def test_shapes_and_dtypes(pooling, position_embedding, dtype):
    _, params, apply = built(pooling, position_embedding, dtype)
    assert ("posemb" in params["params"]) == (position_embedding == "learned")
    x, out = apply(params, images())
    length = N + 1 if pooling == "cls" else N
    assert x.shape == (B, length, D) and x.dtype == dtype
    assert out["pooled"].shape == (B, D) and out["pooled"].dtype == dtype
    assert out["stem"].shape == (B, N, D)
    assert out["mask"].shape == (B, length) and bool(out["mask"].all())
    np.testing.assert_array_equal(out["grid"], [SIZE // PATCH, SIZE // PATCH])
    assert bool(jnp.all(jnp.isfinite(out["pooled"].astype(jnp.float32))))


def test_examples_are_independent_and_inputs_matter():
    _, params, apply = built("cls", "learned")
    x = images()
    pooled = apply(params, x)[1]["pooled"]
    changed = apply(params, x.at[0, :PATCH, :PATCH].set(0.0))[1]["pooled"]
    assert np.abs(changed[0] - pooled[0]).max() > 1e-3
    np.testing.assert_allclose(changed[1], pooled[1], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "shape",
    [
        (B, SIZE + 1, SIZE, 3),  # wrong height
        (B, SIZE, SIZE // 2, 3),  # wrong width
        (B, SIZE, SIZE, 1),  # wrong channels
        (SIZE, SIZE, 3),  # no batch axis
        (B, 1, SIZE, SIZE, 3),  # rank 5
    ],
)
def test_wrong_shape_raises_naming_expected_shape(shape):
    encoder, params, _ = built("cls", "learned")
    expected = re.escape(f"[batch, {SIZE}, {SIZE}, 3]")
    with pytest.raises(ValueError, match=expected) as info:
        jax.eval_shape(encoder.apply, params, jnp.zeros(shape, jnp.float32))
    assert str(shape) in str(info.value)  # the error also shows what it got


def test_gradients_reach_every_param():
    _, params, apply = built("cls", "learned")
    x = images()
    w = np.random.default_rng(3).normal(size=(B, D)).astype(np.float32)

    @jax.jit
    @jax.grad
    def grad(p):
        return jnp.sum(apply(p, x)[1]["pooled"] * w)

    for path, g in jax.tree_util.tree_leaves_with_path(grad(params)):
        name = jax.tree_util.keystr(path)
        assert bool(jnp.all(jnp.isfinite(g))), f"non-finite gradient for {name}"
        if not any(s in name for s in SHIFT_INVARIANT):
            assert bool(jnp.any(g != 0)), f"zero gradient for {name}"
