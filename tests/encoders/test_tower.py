"""Tests for mmtx.encoders.tower: the shared CLS / encoder / pooling tower and masked_mean."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmtx.encoders.tower import Tower, masked_mean

B, T, D = 2, 6, 16


def make_tower(pooling, **kwargs):
    return Tower(depth=1, num_heads=2, mlp_dim=32, pooling=pooling, **kwargs)


def inputs():
    x = jax.random.normal(jax.random.key(0), (B, T, D))
    mask = np.ones((B, T), bool)
    mask[0, 4:] = False  # row 0 has two padded tokens
    mask[1, 2:] = False  # row 1 has four
    return x, jnp.asarray(mask)


def reference_masked_mean(x, mask):
    x, mask = np.asarray(x, np.float64), np.asarray(mask, bool)
    rows = []
    for row, keep in zip(x, mask, strict=True):
        rows.append(row[keep].mean(axis=0) if keep.any() else np.zeros(x.shape[-1]))
    return np.stack(rows)


def test_masked_mean_matches_numpy():
    x = np.random.default_rng(0).normal(size=(4, 5, 3)).astype(np.float32)
    mask = np.array(
        [[1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [0, 1, 0, 1, 1], [0, 0, 0, 0, 0]], bool
    )
    got = masked_mean(jnp.asarray(x), jnp.asarray(mask))
    assert got.shape == (4, 3)
    np.testing.assert_allclose(got, reference_masked_mean(x, mask), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got[3], 0.0)  # no valid token -> zeros, not NaN


def test_masked_mean_without_mask_is_plain_mean():
    x = np.random.default_rng(1).normal(size=(2, 7, 3)).astype(np.float32)
    np.testing.assert_allclose(masked_mean(jnp.asarray(x), None), x.mean(axis=1), rtol=1e-6)


@pytest.mark.parametrize("pooling,length", [("cls", T + 1), ("mean", T)])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_shapes_and_dtypes(pooling, length, dtype):
    x, mask = inputs()
    tower = make_tower(pooling, dtype=dtype)
    params = tower.init(jax.random.key(1), x, mask)
    y, out = tower.apply(params, x, mask)
    assert y.shape == (B, length, D) and y.dtype == dtype
    assert out["pooled"].shape == (B, D) and out["pooled"].dtype == dtype
    assert out["encoded"].shape == (B, length, D)
    assert out["mask"].shape == (B, length) and out["mask"].dtype == jnp.bool_
    if pooling == "cls":
        assert bool(out["mask"][:, 0].all())  # the CLS token is always valid
        np.testing.assert_array_equal(out["mask"][:, 1:], mask)
        np.testing.assert_array_equal(out["pooled"], y[:, 0])
    else:
        np.testing.assert_array_equal(out["mask"], mask)
        np.testing.assert_allclose(
            np.asarray(out["pooled"], np.float32),
            reference_masked_mean(np.asarray(y, np.float32), mask),
            rtol=2e-2 if dtype == jnp.bfloat16 else 1e-5,
            atol=2e-2 if dtype == jnp.bfloat16 else 1e-5,
        )
    # All param leaves stay in param_dtype.
    for leaf in jax.tree.leaves(params):
        assert leaf.dtype == jnp.float32


def test_no_mask_means_all_valid():
    x, _ = inputs()
    tower = make_tower("mean")
    params = tower.init(jax.random.key(1), x)
    _, out_none = tower.apply(params, x)
    _, out_ones = tower.apply(params, x, jnp.ones((B, T), bool))
    np.testing.assert_array_equal(out_none["pooled"], out_ones["pooled"])


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_masked_tokens_do_not_affect_pooled(pooling):
    x, mask = inputs()
    tower = make_tower(pooling)
    params = tower.init(jax.random.key(1), x, mask)
    _, out = tower.apply(params, x, mask)
    noise = 100.0 * jax.random.normal(jax.random.key(2), x.shape)
    perturbed = jnp.where(mask[..., None], x, noise)
    _, out_perturbed = tower.apply(params, perturbed, mask)
    np.testing.assert_array_equal(out["pooled"], out_perturbed["pooled"])
    # ...while a real token does.
    _, out_real = tower.apply(params, x.at[0, 0].add(1.0), mask)
    assert not np.allclose(out["pooled"][0], out_real["pooled"][0])


def test_unknown_pooling_raises():
    x, mask = inputs()
    with pytest.raises(ValueError, match="pooling"):
        make_tower("max").init(jax.random.key(0), x, mask)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_gradients_reach_every_param(pooling):
    x, mask = inputs()
    tower = make_tower(pooling)
    params = tower.init(jax.random.key(1), x, mask)
    w = jax.random.normal(jax.random.key(3), (B, D))

    def loss(p):
        return jnp.sum(tower.apply(p, x, mask)[1]["pooled"] * w)

    grads = jax.grad(loss)(params)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        name = jax.tree_util.keystr(path)
        assert bool(jnp.all(jnp.isfinite(g))), name
        assert bool(jnp.any(g != 0)), f"zero gradient for {name}"
