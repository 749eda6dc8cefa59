"""The contract every fusion module in mmtx.fusion.FUSION_MODULES keeps.

Any subset of modalities runs; padded tokens have no influence; ``keep=False`` for an
example is exactly the modality's absence for it; every param gets a gradient.
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import FEATURE_SPECS, SHIFT_INVARIANT, random_features, random_params

from mmtx.fusion import FUSION_MODULES, MODALITIES

B, WIDTH = 3, 16
# Per modality: (tokens T_m, feature width D_m, padded tokens at the end of row 0).
SPECS = FEATURE_SPECS
SUBSETS = [s for r in range(1, len(MODALITIES) + 1) for s in itertools.combinations(MODALITIES, r)]
ATTENTION_FUSIONS = ("concat", "cross_attention", "bottleneck", "perceiver")
KWARGS = {
    "concat": dict(depth=1, num_heads=2, mlp_dim=32),
    "gated": {},
    "cross_attention": dict(depth=2, num_heads=2, mlp_dim=32),
    "bottleneck": dict(depth=2, num_heads=2, mlp_dim=32, num_bottlenecks=2),
    "perceiver": dict(depth=2, num_heads=2, mlp_dim=32, num_latents=4),
}


def make_features(modalities=MODALITIES, batch=B, seed=0):
    return random_features(modalities, batch, seed, SPECS)


@functools.cache
def built(kind):
    fusion = FUSION_MODULES[kind](width=WIDTH, **KWARGS[kind])
    # Params for all four modalities; a call with a subset uses that subset's params.
    return fusion, random_params(fusion, make_features()), jax.jit(fusion.apply)


def test_every_type_is_covered():
    assert set(KWARGS) == set(FUSION_MODULES)


@pytest.mark.parametrize("kind", sorted(FUSION_MODULES))
def test_every_subset_gives_a_finite_fused_embedding(kind):
    _, params, apply = built(kind)
    fused = {s: apply(params, make_features(s))[0] for s in SUBSETS}
    for subset, value in fused.items():
        assert value.shape == (B, WIDTH) and value.dtype == jnp.float32, subset
        assert bool(jnp.all(jnp.isfinite(value))), subset
    # Every modality matters: each subset gives a different embedding.
    values = list(fused.values())
    for a, b in itertools.combinations(range(len(values)), 2):
        assert np.abs(values[a] - values[b]).max() > 1e-4, (SUBSETS[a], SUBSETS[b])


@pytest.mark.parametrize("kind", ATTENTION_FUSIONS)
def test_padded_tokens_have_no_influence(kind):
    _, params, apply = built(kind)
    features = make_features()
    fused = apply(params, features)[0]
    rng = np.random.default_rng(7)
    perturbed = {
        name: f._replace(
            tokens=jnp.where(f.mask[..., None], f.tokens, 50 * rng.normal(size=f.tokens.shape))
        )
        for name, f in features.items()
    }
    assert not np.array_equal(perturbed["text"].tokens, features["text"].tokens)
    np.testing.assert_allclose(apply(params, perturbed)[0], fused, rtol=1e-6, atol=1e-6)
    # ...but a real token does, and only in its own example.
    text = features["text"]
    changed = dict(features, text=text._replace(tokens=text.tokens.at[0, 0].set(5.0)))
    fused_changed = apply(params, changed)[0]
    assert np.abs(fused_changed[0] - fused[0]).max() > 1e-3
    np.testing.assert_array_equal(fused_changed[1:], fused[1:])


@pytest.mark.parametrize("kind", sorted(FUSION_MODULES))
@pytest.mark.parametrize("dropped", MODALITIES)
def test_keep_false_equals_absence_for_that_example(kind, dropped):
    _, params, apply = built(kind)
    features = make_features()
    keep = jnp.asarray([True, False, True])
    with_keep = dict(features, **{dropped: features[dropped]._replace(keep=keep)})
    fused = apply(params, with_keep)[0]
    full = apply(params, features)[0]
    absent = apply(params, {m: f for m, f in features.items() if m != dropped})[0]
    np.testing.assert_allclose(fused[0], full[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fused[2], full[2], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fused[1], absent[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", sorted(FUSION_MODULES))
def test_gradients_reach_every_param(kind):
    _, params, apply = built(kind)
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


@pytest.mark.parametrize("kind", sorted(FUSION_MODULES))
def test_bad_features_raise(kind):
    fusion, params, _ = built(kind)
    with pytest.raises(ValueError, match="at least one modality"):
        fusion.apply(params, {})
    mixed = dict(make_features(("text",), batch=2), **make_features(("image",), batch=3))
    with pytest.raises(ValueError, match="batch size"):
        jax.eval_shape(fusion.apply, params, mixed)
    with pytest.raises(ValueError, match="smell"):
        jax.eval_shape(fusion.apply, params, {"smell": make_features(("image",))["image"]})


def _expected_weight_names(kind, present):
    """The blocks whose attention maps ``out["attention_weights"]`` holds, by kind."""
    layers = range(KWARGS[kind]["depth"])
    if kind == "cross_attention":
        return {f"{m}_{part}_{i}" for m in present for i in layers for part in ("cross", "self")}
    if kind == "bottleneck":
        return {f"{m}_{i}" for m in present for i in layers}
    return {f"cross_{i}" for i in layers} | {f"latent_{i}_0" for i in layers}


@pytest.mark.parametrize("kind", ATTENTION_FUSIONS)
def test_capture_weights_returns_every_blocks_map_and_changes_nothing(kind):
    """``capture_weights=True``: ``out["attention_weights"]`` holds each block's float32
    probabilities (rows summing to one, zero on padded keys: here every example keeps every
    modality), and the fused embedding is unchanged."""
    _, params, apply = built(kind)
    capturing = FUSION_MODULES[kind](width=WIDTH, capture_weights=True, **KWARGS[kind])
    features = make_features()
    fused, out = jax.jit(capturing.apply)(params, features)
    np.testing.assert_allclose(fused, apply(params, features)[0], rtol=1e-5, atol=1e-6)
    assert "attention_weights" not in apply(params, features)[1]
    weights = out["attention_weights"]
    if kind == "concat":
        tokens = 1 + sum(SPECS[m][0] for m in MODALITIES)
        assert weights.shape == (KWARGS[kind]["depth"], B, 2, tokens, tokens)
        maps = {"joint": weights}
    else:
        assert set(weights) == _expected_weight_names(kind, MODALITIES)
        maps = weights
    for name, w in maps.items():
        w = np.asarray(w)
        assert w.dtype == np.float32 and w.shape[-3] == 2, name
        np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-5, err_msg=name)
    if kind == "perceiver":  # latents -> all tokens: example 0's padded tokens get nothing
        padded = np.concatenate([~np.asarray(features[m].mask[0]) for m in MODALITIES])
        assert padded.any() and np.all(np.asarray(weights["cross_0"])[0][..., padded] == 0.0)


@pytest.mark.parametrize("kind", ("cross_attention", "bottleneck", "perceiver"))
def test_dropout_only_in_training(kind):
    fusion = FUSION_MODULES[kind](width=WIDTH, dropout_rate=0.5, **KWARGS[kind])
    features = make_features(("text", "image"))  # dropout acts alike on any subset
    params = random_params(fusion, features)
    evaluated = fusion.apply(params, features)[0]
    np.testing.assert_array_equal(fusion.apply(params, features, train=False)[0], evaluated)
    trained = fusion.apply(params, features, train=True, rngs={"dropout": jax.random.key(1)})[0]
    assert np.abs(trained - evaluated).max() > 1e-3


def test_a_registered_fusion_is_built_from_the_config():
    import flax.linen as nn

    from mmtx import config as config_lib
    from mmtx.fusion import register_fusion
    from mmtx.models import MultiModalTransformer, dummy_batch

    class MaxPoolFusion(nn.Module):
        width: int
        dtype: jnp.dtype = jnp.float32
        param_dtype: jnp.dtype = jnp.float32

        @nn.compact
        def __call__(self, features, *, train=False):
            pooled = [nn.Dense(self.width)(f.pooled) for f in features.values()]
            return jnp.max(jnp.stack(pooled), axis=0), {}

    config = config_lib.apply_variant(config_lib.default_config(), "tiny")
    config.fusion.type = "max_pool"
    config_lib.validate(config)  # data: which fusions are registered is the model's question
    with pytest.raises(ValueError, match=r"config\.fusion\.type:"):
        MultiModalTransformer.from_config(config, vocab_size=259)
    register_fusion("max_pool", MaxPoolFusion)
    try:
        config_lib.validate(config)
        module = MultiModalTransformer.from_config(config, vocab_size=259)
        assert dict(module.fusion) == {"width": config.fusion.width}
        out = jax.eval_shape(module.init_with_output, jax.random.key(0), dummy_batch(config, 2))
        assert out[0]["fused"].shape == (2, config.model.embed_dim)
    finally:
        FUSION_MODULES.pop("max_pool")
    with pytest.raises(TypeError, match="width"):
        register_fusion("bad", nn.Dense)
