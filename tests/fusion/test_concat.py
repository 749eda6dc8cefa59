"""Tests for mmtx.fusion.concat.ConcatFusion (early fusion: one joint transformer)."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import FEATURE_SPECS, SHIFT_INVARIANT, random_features, random_params

from mmtx.fusion import MODALITIES, ConcatFusion

B, WIDTH = 2, 16
# Per modality: (tokens T_m, feature width D_m, number of padded tokens at the end of row 0).
SPECS = FEATURE_SPECS
SUBSETS = [s for r in range(1, len(MODALITIES) + 1) for s in itertools.combinations(MODALITIES, r)]


def make_features(modalities=MODALITIES, batch=B, seed=0):
    return random_features(modalities, batch, seed, SPECS)


@functools.cache
def built():
    fusion = ConcatFusion(width=WIDTH, depth=1, num_heads=2, mlp_dim=32)
    # Params for all three modalities; a call with a subset uses the subset's projections.
    return fusion, random_params(fusion, make_features()), jax.jit(fusion.apply)


@pytest.mark.parametrize("modalities", SUBSETS, ids="+".join)
def test_every_subset_gives_fused_embedding(modalities):
    _, params, apply = built()
    features = make_features(modalities)
    fused, out = apply(params, features)
    assert fused.shape == (B, WIDTH) and fused.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(fused)))
    length = 1 + sum(SPECS[m][0] for m in modalities)
    assert out["tokens"].shape == (B, length, WIDTH)
    expected_mask = np.concatenate(
        [np.ones((B, 1), bool)] + [features[m].mask for m in modalities], 1
    )
    np.testing.assert_array_equal(out["mask"], expected_mask)
    np.testing.assert_array_equal(fused, out["tokens"][:, 0])


def test_masked_tokens_have_no_influence():
    _, params, apply = built()
    features = make_features()
    fused, _ = apply(params, features)
    rng = np.random.default_rng(7)
    perturbed = {
        name: f._replace(
            tokens=jnp.where(f.mask[..., None], f.tokens, 50 * rng.normal(size=f.tokens.shape))
        )
        for name, f in features.items()
    }
    assert not np.array_equal(perturbed["text"].tokens, features["text"].tokens)
    np.testing.assert_array_equal(apply(params, perturbed)[0], fused)
    # ...but a real token does (only in its own row).
    text = features["text"]
    changed = dict(features, text=text._replace(tokens=text.tokens.at[0, 0].set(5.0)))
    fused_changed = apply(params, changed)[0]
    assert np.abs(fused_changed[0] - fused[0]).max() > 1e-3
    np.testing.assert_array_equal(fused_changed[1], fused[1])


def test_fully_masked_modality_equals_absent_modality():
    _, params, apply = built()
    features = make_features(("text", "image"))
    text = features["text"]
    hidden = dict(features, text=text._replace(mask=jnp.zeros_like(text.mask)))
    np.testing.assert_allclose(
        apply(params, hidden)[0],
        apply(params, {"image": features["image"]})[0],
        rtol=1e-5,
        atol=1e-5,
    )


def test_empty_features_raise():
    fusion, params, _ = built()
    with pytest.raises(ValueError, match="at least one modality"):
        fusion.apply(params, {})


def test_mismatched_batch_sizes_raise():
    fusion, params, _ = built()
    features = dict(make_features(("text",), batch=2), **make_features(("image",), batch=3))
    with pytest.raises(ValueError, match="batch size"):
        jax.eval_shape(fusion.apply, params, features)


def test_unknown_modality_raises():
    fusion, params, _ = built()
    features = {"smell": make_features(("image",))["image"]}
    with pytest.raises(ValueError, match="smell"):
        jax.eval_shape(fusion.apply, params, features)


def test_gradients_reach_every_param():
    _, params, apply = built()
    features = make_features()
    w = np.random.default_rng(3).normal(size=(B, WIDTH)).astype(np.float32)

    @jax.jit
    @jax.grad
    def grad(p):
        return jnp.sum(apply(p, features)[0] * w)

    for path, g in jax.tree_util.tree_leaves_with_path(grad(params)):
        name = jax.tree_util.keystr(path)
        assert bool(jnp.all(jnp.isfinite(g))), f"non-finite gradient for {name}"
        if not any(s in name for s in SHIFT_INVARIANT):
            assert bool(jnp.any(g != 0)), f"zero gradient for {name}"


def test_keep_false_drops_a_modality_for_that_example_only():
    _, params, apply = built()
    features = make_features(("text", "image"))
    keep = jnp.asarray([True] + [False] * (B - 1))
    dropped = dict(features, text=features["text"]._replace(keep=keep))
    fused = apply(params, dropped)[0]
    np.testing.assert_allclose(fused[0], apply(params, features)[0][0], rtol=1e-5, atol=1e-5)
    image_only = apply(params, {"image": features["image"]})[0]
    np.testing.assert_allclose(fused[1:], image_only[1:], rtol=1e-5, atol=1e-5)
