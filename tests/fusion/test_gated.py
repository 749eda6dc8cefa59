"""Tests for mmtx.fusion.gated.GatedFusion (late fusion: softmax-weighted pooled embeddings)."""

import functools
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmtx.fusion import MODALITIES, GatedFusion, ModalityFeatures

B, WIDTH = 3, 8
# (tokens T_m, width D_m) per modality.
SPECS = {"text": (5, 6), "image": (4, 10), "audio": (3, 12), "video": (2, 8)}
SUBSETS = [s for r in range(1, len(MODALITIES) + 1) for s in itertools.combinations(MODALITIES, r)]


def random_params(module, *args, seed=0):
    """Params of ``module`` at a random point, so gate logits are distinct (numpy RNG)."""
    shapes = jax.eval_shape(module.init, jax.random.key(0), *args)
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape), s.dtype), shapes)


def make_features(modalities=MODALITIES, batch=B, seed=0):
    rng = np.random.default_rng(seed)
    features = {}
    for name in modalities:
        length, dim = SPECS[name]
        mask = np.ones((batch, length), bool)
        mask[0, -2:] = False
        features[name] = ModalityFeatures(
            tokens=jnp.asarray(rng.normal(size=(batch, length, dim)), jnp.float32),
            mask=jnp.asarray(mask),
            pooled=jnp.asarray(rng.normal(size=(batch, dim)), jnp.float32),
        )
    return features


@functools.cache
def built():
    fusion = GatedFusion(width=WIDTH)
    return fusion, random_params(fusion, make_features()), jax.jit(fusion.apply)


def reference(params, features):
    """fused = sum_m softmax(g[present])_m * (pooled_m @ W_m + b_m), in float64 numpy."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), nn.meta.unbox(params["params"]))
    present = [m for m in MODALITIES if m in features]
    logits = np.array([p["gate_logits"][MODALITIES.index(m)] for m in present])
    weights = np.exp(logits - logits.max())
    weights /= weights.sum()
    fused = sum(
        w * (np.asarray(features[m].pooled, np.float64) @ p[f"{m}_projection"]["kernel"]
             + p[f"{m}_projection"]["bias"])
        for w, m in zip(weights, present, strict=True)
    )  # fmt: skip
    return fused, dict(zip(present, weights, strict=True))


@pytest.mark.parametrize("modalities", SUBSETS, ids="+".join)
def test_every_subset_matches_reference(modalities):
    _, params, apply = built()
    assert len(set(np.asarray(params["params"]["gate_logits"]).tolist())) == len(MODALITIES)
    features = make_features(modalities)
    fused, out = apply(params, features)
    assert fused.shape == (B, WIDTH) and fused.dtype == jnp.float32
    ref_fused, ref_weights = reference(params, features)
    np.testing.assert_allclose(fused, ref_fused, rtol=1e-5, atol=1e-5)
    weights = out["weights"]
    assert sorted(weights) == sorted(modalities)  # only the present modalities
    for m in modalities:
        assert weights[m].shape == () and weights[m].dtype == jnp.float32
        np.testing.assert_allclose(weights[m], ref_weights[m], rtol=1e-6)
    np.testing.assert_allclose(sum(float(w) for w in weights.values()), 1.0, rtol=1e-6)


def test_tokens_and_masks_have_no_influence():
    _, params, apply = built()
    features = make_features()
    fused, _ = apply(params, features)
    rng = np.random.default_rng(7)
    perturbed = {
        name: f._replace(
            tokens=jnp.where(f.mask[..., None], f.tokens, 50 * rng.normal(size=f.tokens.shape)),
            mask=~f.mask,
        )
        for name, f in features.items()
    }
    np.testing.assert_array_equal(apply(params, perturbed)[0], fused)
    changed = dict(features, text=features["text"]._replace(pooled=features["text"].pooled + 1))
    assert not np.allclose(apply(params, changed)[0], fused)


@pytest.mark.parametrize("modalities", [("text", "audio"), MODALITIES, ("image",)], ids="+".join)
def test_gradient_reaches_gate_logits_of_present_modalities(modalities):
    _, params, apply = built()
    features = make_features(modalities)
    w = np.random.default_rng(3).normal(size=(B, WIDTH)).astype(np.float32)
    grads = jax.grad(lambda p: jnp.sum(apply(p, features)[0] * w))(params)["params"]
    gate = np.asarray(grads["gate_logits"])
    for index, m in enumerate(MODALITIES):
        if m in modalities and len(modalities) > 1:
            assert gate[index] != 0, m
        else:
            # Absent modalities get no gradient; a lone modality has weight 1 whatever its logit.
            assert gate[index] == 0, m
    # Softmax weights sum to one, so the logit gradients sum to zero.
    np.testing.assert_allclose(gate.sum(), 0.0, atol=1e-5)
    for m in modalities:
        assert bool(jnp.any(grads[f"{m}_projection"]["kernel"] != 0))


def test_empty_features_raise():
    fusion, params, _ = built()
    with pytest.raises(ValueError, match="at least one modality"):
        fusion.apply(params, {})


def test_mismatched_batch_sizes_raise():
    fusion, params, _ = built()
    features = dict(make_features(("text",), batch=2), **make_features(("audio",), batch=3))
    with pytest.raises(ValueError, match="batch size"):
        jax.eval_shape(fusion.apply, params, features)


def test_dropped_modality_is_absent_for_that_example():
    """keep=False on example 0's image equals running example 0 without an image."""
    _, params, apply = built()
    features = make_features()
    keep = jnp.asarray([False, True, True])
    dropped = dict(features, image=features["image"]._replace(keep=keep))
    fused, _ = apply(params, dropped)
    without_image, _ = apply(params, {m: f for m, f in features.items() if m != "image"})
    full, _ = apply(params, features)
    np.testing.assert_allclose(fused[0], without_image[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused[1:], full[1:], rtol=1e-5, atol=1e-6)
