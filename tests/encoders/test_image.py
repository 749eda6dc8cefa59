"""Tests for mmtx.encoders.image.ImageEncoder (ViT)."""

import functools
import re

import flax
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


# ------------------------------------------------------------------ architecture options

HIGHEST = jax.lax.Precision.HIGHEST


@functools.cache
def built_with(**options):
    encoder = ImageEncoder(
        image_size=SIZE, patch_size=PATCH, width=D, depth=1, num_heads=2, mlp_dim=32, **options
    )
    return encoder, flax.linen.unbox(random_params(encoder, images())), jax.jit(encoder.apply)


def ref_layer_norm(p, x, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def ref_map_head(p, x, eps, activation):
    """big_vision's MAPHead in numpy: a probe attends to the tokens, then a residual MLP."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
    x = np.asarray(x, np.float64)
    a = p["attention"]
    probe = np.broadcast_to(p["probe"], (x.shape[0], 1, x.shape[2]))
    q = np.einsum("btd,dhk->bthk", probe, a["query"]["kernel"]) + a["query"]["bias"]
    k = np.einsum("bsd,dhk->bshk", x, a["key"]["kernel"]) + a["key"]["bias"]
    v = np.einsum("bsd,dhk->bshk", x, a["value"]["kernel"]) + a["value"]["bias"]
    logits = np.einsum("bthk,bshk->bhts", q, k) / np.sqrt(q.shape[-1])
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    y = np.einsum("bhts,bshk->bthk", weights, v)
    y = np.einsum("bthk,hko->bto", y, a["out"]["kernel"]) + a["out"]["bias"]
    h = ref_layer_norm(p["norm"], y, eps) @ p["mlp"]["fc1"]["kernel"] + p["mlp"]["fc1"]["bias"]
    h = h / (1.0 + np.exp(-1.702 * h)) if activation == "quick_gelu" else h
    y = y + h @ p["mlp"]["fc2"]["kernel"] + p["mlp"]["fc2"]["bias"]
    return y[:, 0]


def test_map_pooling_matches_a_reference_map_head():
    _, params, apply = built_with(pooling="map", activation="quick_gelu", norm_eps=1e-5)
    tower = params["params"]["tower"]
    assert "cls" not in tower and "map_head" in tower
    assert tower["map_head"]["probe"].shape == (1, 1, D)
    assert tower["map_head"]["attention"]["query"]["kernel"].shape == (D, 2, D // 2)
    x, out = apply(params, images())
    assert x.shape == (B, N, D)  # no class token
    want = ref_map_head(tower["map_head"], out["encoded"], 1e-5, "quick_gelu")
    np.testing.assert_allclose(np.asarray(out["pooled"]), want, atol=1e-5)


def test_patch_bias_false_has_no_bias():
    _, params, apply = built_with(patch_bias=False)
    assert set(params["params"]["patches"]["projection"]) == {"kernel"}
    _, with_bias, _ = built_with(patch_bias=True)
    assert set(with_bias["params"]["patches"]["projection"]) == {"kernel", "bias"}
    # Without a bias, a black image (normalised to a constant) embeds to kernel sums only.
    zero = jnp.zeros((1, SIZE, SIZE, 3)) + 0.5  # (0.5 - mean) / std = 0
    stem = apply(params, zero)[1]["stem"] - params["params"]["posemb"]["embedding"]
    np.testing.assert_allclose(np.asarray(stem), 0.0, atol=1e-6)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_class_token_posemb_table_rows_and_order(pooling):
    """With class_token_posemb the table has a row per class token, first, added after the
    class tokens are prepended: equal to the plain model whose class token holds row 0 and
    whose table holds the patches' rows."""
    _, params, apply = built_with(pooling=pooling, class_token_posemb=True)
    k = 1 if pooling == "cls" else 0
    table = params["params"]["posemb"]["embedding"]
    assert table.shape == (k + N, D)
    x, out = apply(params, images())
    assert x.shape == (B, k + N, D)
    *_, plain_apply = built_with(pooling=pooling)
    moved = jax.tree.map(lambda a: a, params)
    moved["params"]["posemb"]["embedding"] = table[k:]
    if k:
        moved["params"]["tower"]["cls"] = params["params"]["tower"]["cls"] + table[0]
    want, want_out = plain_apply(moved, images())
    np.testing.assert_allclose(np.asarray(x), np.asarray(want), atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(out["stem"]) + np.asarray(table[k:]), np.asarray(want_out["stem"]), atol=1e-6
    )


def test_new_image_options_gradients_reach_every_param():
    x = images()
    w = np.random.default_rng(3).normal(size=(B, D)).astype(np.float32)
    for options in (
        {"pooling": "map", "patch_bias": False, "pre_norm": True},
        {"class_token_posemb": True, "final_norm": False, "activation": "gelu"},
    ):
        _, params, apply = built_with(**options)

        def loss(p, apply=apply):
            return jnp.sum(apply(p, x)[1]["pooled"] * w)

        for path, g in jax.tree_util.tree_leaves_with_path(jax.jit(jax.grad(loss))(params)):
            name = jax.tree_util.keystr(path)
            assert bool(jnp.all(jnp.isfinite(g))), name
            if not any(s in name for s in SHIFT_INVARIANT):
                assert bool(jnp.any(g != 0)), f"zero gradient for {name} with {options}"


@pytest.mark.parametrize("attention", ["dense", "local"])
def test_capture_weights_maps_in_out(attention):
    """With ``capture_weights`` the encoder's ``out`` carries each layer's attention map in
    the layout of its kernel: dense ``[depth, B, H, N + 1, N + 1]``; local a band whose
    dense scatter is zero outside the band (radius 1, the CLS token global) and sums to one."""
    from mmtx.attention import LocalWeights, local_weights_to_dense

    options = flax.core.FrozenDict(radius=1, num_global=1) if attention == "local" else {}
    kwargs = dict(image_size=SIZE, patch_size=PATCH, width=D, depth=2, num_heads=2, mlp_dim=32)
    encoder = ImageEncoder(
        **kwargs, attention=attention, attention_options=options, capture_weights=True
    )
    params = random_params(encoder, images())
    _, out = jax.jit(encoder.apply)(params, images())
    weights = out["attention_weights"]
    if attention == "dense":
        assert weights.shape == (2, B, 2, N + 1, N + 1) and weights.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(weights).sum(-1), 1.0, atol=1e-6)
        return
    assert isinstance(weights, LocalWeights) and weights.band.shape[:4] == (2, B, 2, N + 1)
    dense = np.asarray(local_weights_to_dense(weights))
    assert dense.shape == (2, B, 2, N + 1, N + 1)
    i, j = np.arange(N + 1)[:, None], np.arange(N + 1)[None, :]
    outside = ~((np.abs(i - j) <= 1) | (i < 1) | (j < 1))
    assert np.all(dense[..., outside] == 0.0)
    np.testing.assert_allclose(dense.sum(-1), 1.0, atol=1e-6)
