"""Tests for mmtx.encoders.tower: the shared CLS / encoder / pooling tower and masked_mean."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import SHIFT_INVARIANT, random_params

from mmtx.encoders.tower import Tower, grid_position_embedding, masked_mean
from mmtx.nn import Encoder, MAPHead, sincos_2d

B, T, D = 2, 6, 16

# The attention key bias adds q·b_k to every logit of a query row; softmax is invariant to
# that shift, so its gradient is exactly zero by construction (not a bug).


def jitter(params, scale=0.05):
    """Params moved off their init point (zero CLS token, zero biases), where some gradients
    vanish only by symmetry, to a generic point where every one should flow."""
    rng = np.random.default_rng(42)
    return jax.tree.map(lambda p: p + scale * rng.normal(size=p.shape).astype(p.dtype), params)


def assert_all_grads_nonzero(grads):
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        name = jax.tree_util.keystr(path)
        assert bool(jnp.all(jnp.isfinite(g))), f"non-finite gradient for {name}"
        if not any(s in name for s in SHIFT_INVARIANT):
            assert bool(jnp.any(g != 0)), f"zero gradient for {name}"


def inputs():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(B, T, D)), jnp.float32)
    mask = np.ones((B, T), bool)
    mask[0, 4:] = False  # row 0 has two padded tokens
    mask[1, 2:] = False  # row 1 has four
    return x, jnp.asarray(mask)


@functools.cache
def built(pooling, dtype=jnp.float32):
    """(tower, params, jitted apply), shared by the tests of one configuration."""
    x, mask = inputs()
    tower = Tower(depth=1, num_heads=2, mlp_dim=32, pooling=pooling, dtype=dtype)
    params = jax.jit(tower.init)(jax.random.key(1), x, mask)
    return tower, params, jax.jit(tower.apply)


def reference_masked_mean(x, mask):
    x, mask = np.asarray(x, np.float64), np.asarray(mask, bool)
    rows = [
        r[k].mean(axis=0) if k.any() else np.zeros(x.shape[-1])
        for r, k in zip(x, mask, strict=True)
    ]
    return np.stack(rows)


def test_masked_mean_matches_numpy():
    x = np.random.default_rng(0).normal(size=(4, 5, 3)).astype(np.float32)
    mask = np.array([[1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [0, 1, 0, 1, 1], [0, 0, 0, 0, 0]], bool)
    got = masked_mean(jnp.asarray(x), jnp.asarray(mask))
    assert got.shape == (4, 3)
    np.testing.assert_allclose(got, reference_masked_mean(x, mask), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got[3], 0.0)  # no valid token -> zeros, not NaN


def test_masked_mean_without_mask_is_plain_mean():
    x = np.random.default_rng(1).normal(size=(2, 7, 3)).astype(np.float32)
    np.testing.assert_allclose(masked_mean(jnp.asarray(x), None), x.mean(axis=1), rtol=1e-6)


@pytest.mark.parametrize(
    "pooling,length,dtype",
    [("cls", T + 1, jnp.float32), ("mean", T, jnp.float32), ("mean", T, jnp.bfloat16)],
)
def test_shapes_and_dtypes(pooling, length, dtype):
    x, mask = inputs()
    _, params, apply = built(pooling, dtype)
    y, out = apply(params, x, mask)
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
        tol = 2e-2 if dtype == jnp.bfloat16 else 1e-5
        np.testing.assert_allclose(
            np.asarray(out["pooled"], np.float32),
            reference_masked_mean(np.asarray(y, np.float32), mask),
            rtol=tol,
            atol=tol,
        )
    for leaf in jax.tree.leaves(params):  # params stay in param_dtype
        assert leaf.dtype == jnp.float32


def test_no_mask_means_all_valid():
    x, _ = inputs()
    _, params, apply = built("mean")
    _, out_none = apply(params, x)
    _, out_ones = apply(params, x, jnp.ones((B, T), bool))
    np.testing.assert_allclose(out_none["pooled"], out_ones["pooled"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_masked_tokens_do_not_affect_pooled(pooling):
    x, mask = inputs()
    _, params, apply = built(pooling)
    _, out = apply(params, x, mask)
    noise = 100.0 * np.random.default_rng(2).normal(size=x.shape).astype(np.float32)
    _, out_perturbed = apply(params, jnp.where(mask[..., None], x, noise), mask)
    np.testing.assert_array_equal(out["pooled"], out_perturbed["pooled"])
    # ...while a real token does (a random direction: a constant shift is erased by LayerNorm).
    _, out_real = apply(params, x.at[0, 0].add(noise[0, 0]), mask)
    assert np.abs(out["pooled"][0] - out_real["pooled"][0]).max() > 1e-3
    np.testing.assert_array_equal(out["pooled"][1], out_real["pooled"][1])  # other row: no effect


def test_unknown_pooling_raises():
    x, mask = inputs()
    with pytest.raises(ValueError, match="pooling"):
        tower = Tower(depth=1, num_heads=2, mlp_dim=32, pooling="max")
        jax.eval_shape(tower.init, jax.random.key(0), x, mask)


def test_gradients_reach_every_param():
    # Mean pooling: the gradient flows through masked_mean and every token. (CLS pooling's
    # gradients are checked by every encoder's test, whose default pooling it is.)
    x, mask = inputs()
    _, params, apply = built("mean")
    w = np.random.default_rng(3).normal(size=(B, D)).astype(np.float32)

    def loss(p):
        return jnp.sum(apply(p, x, mask)[1]["pooled"] * w)

    assert_all_grads_nonzero(jax.jit(jax.grad(loss))(jitter(params)))


# ------------------------------------------------------------------ architecture options


def ref_layer_norm(p, x, eps=1e-6):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + eps) * p["scale"] + p["bias"]


@pytest.mark.parametrize("pre_norm,final_norm", [(True, True), (True, False), (False, False)])
def test_pre_norm_and_final_norm(pre_norm, final_norm):
    """pre_norm: a LayerNorm ``pre_norm`` on the tokens (class token included) before the
    first block; final_norm=False: no ``encoder/norm``, the blocks' output is the output."""
    eps = 1e-5
    x, mask = inputs()
    tower = Tower(
        depth=1, num_heads=2, mlp_dim=32, pre_norm=pre_norm, final_norm=final_norm, norm_eps=eps
    )
    params = nn.unbox(random_params(tower, x, mask))
    assert ("pre_norm" in params["params"]) == pre_norm
    assert ("norm" in params["params"]["encoder"]) == final_norm
    y, out = jax.jit(tower.apply)(params, x, mask)

    p = params["params"]
    cls = jnp.broadcast_to(p["cls"], (B, 1, D))
    tokens = jnp.concatenate([cls, x], axis=1)
    if pre_norm:
        tokens = ref_layer_norm(p["pre_norm"], tokens, eps)
    full_mask = jnp.concatenate([jnp.ones((B, 1), bool), mask], axis=1)
    blocks = Encoder(depth=1, num_heads=2, mlp_dim=32, norm_eps=eps, final_norm=False)
    want = blocks.apply({"params": {"blocks": p["encoder"]["blocks"]}}, tokens, full_mask)[0]
    if final_norm:
        want = ref_layer_norm(p["encoder"]["norm"], want, eps)
    np.testing.assert_allclose(np.asarray(y), np.asarray(want), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(out["pooled"]), np.asarray(y[:, 0]))


def test_defaults_have_no_pre_norm_and_a_final_norm():
    _, params, _ = built("cls")
    assert "pre_norm" not in params["params"]
    assert set(params["params"]["encoder"]) == {"blocks", "norm"}


def test_cls_distill_prepends_two_tokens_and_pools_their_mean():
    x, mask = inputs()
    tower = Tower(depth=1, num_heads=2, mlp_dim=32, pooling="cls_distill")
    params = nn.unbox(random_params(tower, x, mask))
    assert params["params"]["cls"].shape == params["params"]["distill"].shape == (1, 1, D)
    y, out = jax.jit(tower.apply)(params, x, mask)
    assert y.shape == (B, T + 2, D) and out["mask"].shape == (B, T + 2)
    assert bool(out["mask"][:, :2].all())
    np.testing.assert_allclose(
        np.asarray(out["pooled"]), (np.asarray(y[:, 0]) + np.asarray(y[:, 1])) / 2, atol=1e-6
    )
    # The order is [cls, distill, tokens...]: swapping the two tokens' values changes y[:, 0].
    swapped = jax.tree.map(lambda a: a, params)
    p = swapped["params"]
    p["cls"], p["distill"] = params["params"]["distill"], params["params"]["cls"]
    y_swapped = jax.jit(tower.apply)(swapped, x, mask)[0]
    np.testing.assert_allclose(np.asarray(y_swapped[:, 0]), np.asarray(y[:, 1]), atol=1e-5)


def test_last_pooling_takes_the_last_valid_position():
    x, mask = inputs()
    tower = Tower(depth=1, num_heads=2, mlp_dim=32, pooling="last")
    params = nn.unbox(random_params(tower, x, mask))
    assert "cls" not in params["params"]
    y, out = jax.jit(tower.apply)(params, x, mask)
    assert y.shape == (B, T, D)
    np.testing.assert_array_equal(np.asarray(out["pooled"][0]), np.asarray(y[0, 3]))
    np.testing.assert_array_equal(np.asarray(out["pooled"][1]), np.asarray(y[1, 1]))


def test_eot_pooling_takes_the_given_index_and_needs_it():
    x, mask = inputs()
    tower = Tower(depth=1, num_heads=2, mlp_dim=32, pooling="eot")
    index = jnp.asarray([2, 0])
    params = nn.unbox(jax.jit(tower.init)(jax.random.key(0), x, mask, pool_index=index))
    y, out = jax.jit(tower.apply)(params, x, mask, pool_index=index)
    np.testing.assert_array_equal(np.asarray(out["pooled"]), np.asarray(y[jnp.arange(B), index]))
    with pytest.raises(ValueError, match="pool_index"):
        jax.eval_shape(tower.apply, params, x, mask)


def test_map_pooling_uses_a_map_head_on_the_final_tokens():
    x, mask = inputs()
    tower = Tower(depth=1, num_heads=2, mlp_dim=32, pooling="map", norm_eps=1e-5)
    params = nn.unbox(random_params(tower, x, mask))
    assert "cls" not in params["params"]
    y, out = jax.jit(tower.apply)(params, x, mask)
    assert y.shape == (B, T, D)
    head = MAPHead(num_heads=2, mlp_dim=32, norm_eps=1e-5)
    want = head.apply({"params": params["params"]["map_head"]}, y, mask)[0]
    np.testing.assert_allclose(np.asarray(out["pooled"]), np.asarray(want), atol=1e-6)


def test_posemb_is_applied_after_the_class_tokens():
    x, mask = inputs()
    tower = Tower(depth=1, num_heads=2, mlp_dim=32, pooling="cls_distill")
    params = nn.unbox(random_params(tower, x, mask))
    table = jnp.asarray(np.random.default_rng(5).normal(size=(T + 2, D)), jnp.float32)
    got = jax.jit(lambda p, x: tower.apply(p, x, mask, posemb=lambda t: t + table))(params, x)[0]
    # The same as prepending the class tokens plus their rows by hand, with no posemb.
    p = params["params"]
    shifted = jax.tree.map(lambda a: a, params)
    shifted["params"]["cls"] = p["cls"] + table[0]
    shifted["params"]["distill"] = p["distill"] + table[1]
    want = jax.jit(tower.apply)(shifted, x + table[2:], mask)[0]
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


def test_gradients_reach_every_param_of_the_new_options():
    x, mask = inputs()
    w = np.random.default_rng(3).normal(size=(B, D)).astype(np.float32)
    for pooling in ("cls_distill", "map"):
        tower = Tower(depth=1, num_heads=2, mlp_dim=32, pooling=pooling, pre_norm=True)
        params = nn.unbox(random_params(tower, x, mask))

        def loss(p, tower=tower):
            return jnp.sum(tower.apply(p, x, mask)[1]["pooled"] * w)

        assert_all_grads_nonzero(jax.jit(jax.grad(loss))(params))


def test_capture_weights_out_carries_every_layers_map_scanned_or_not():
    """``out["attention_weights"]`` ``[depth, B, H, T, T]`` and, with map pooling,
    ``out["map_attention_weights"]`` ``[B, H, 1, T]``: softmax rows that skip padded tokens,
    the same with and without ``nn.scan``, and the tower's outputs are unchanged."""
    x, mask = inputs()
    kwargs = dict(depth=2, num_heads=2, mlp_dim=32, pooling="map")
    scanned = Tower(**kwargs, capture_weights=True)
    unrolled = Tower(**kwargs, capture_weights=True, scan=False)
    params = nn.unbox(random_params(scanned, x, mask))
    blocks = params["params"]["encoder"].pop("blocks")
    unrolled_params = jax.tree.map(lambda a: a, params)
    for i in range(2):
        unrolled_params["params"]["encoder"][f"block_{i}"] = jax.tree.map(
            lambda a, i=i: a[i], blocks
        )
    params["params"]["encoder"]["blocks"] = blocks

    y, out = jax.jit(scanned.apply)(params, x, mask)
    y_u, out_u = jax.jit(unrolled.apply)(unrolled_params, x, mask)
    y_plain, out_plain = jax.jit(Tower(**kwargs).apply)(params, x, mask)
    assert "attention_weights" not in out_plain and "map_attention_weights" not in out_plain
    np.testing.assert_allclose(out["pooled"], out_plain["pooled"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y, y_plain, rtol=1e-5, atol=1e-6)

    weights, probe = np.asarray(out["attention_weights"]), np.asarray(out["map_attention_weights"])
    assert weights.shape == (2, B, 2, T, T) and weights.dtype == np.float32
    assert probe.shape == (B, 2, 1, T)
    padded = ~np.asarray(mask)[:, None, None, :]
    for w in (*weights, probe):
        np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-6)
        assert np.all(w[np.broadcast_to(padded, w.shape)] == 0.0)
    assert jax.tree.structure(out_u) == jax.tree.structure(out)
    for key in ("attention_weights", "map_attention_weights", "pooled"):
        np.testing.assert_allclose(out_u[key], out[key], rtol=1e-5, atol=1e-6, err_msg=key)
    np.testing.assert_allclose(y_u, y, rtol=1e-5, atol=1e-6)


class _Posembed(nn.Module):
    """grid_position_embedding over a 2 x 3 grid, and the table it adds, for the test below."""

    position_embedding: str
    class_token_posemb: bool
    pooling: str = "cls"
    width: int = 8
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, bool]:
        y, posemb = grid_position_embedding(self, x, (2, 3))
        if posemb is not None:  # as the Tower does: one class token, then the whole table
            posemb(jnp.zeros((x.shape[0], 7, self.width)))
        return y, posemb is not None


@pytest.mark.parametrize(
    "kind,class_token_posemb", [("sincos", False), ("learned", False), ("learned", True)]
)
def test_grid_position_embedding_adds_the_table_it_says(kind, class_token_posemb) -> None:
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 6, 8)), jnp.float32)
    module = _Posembed(kind, class_token_posemb)
    params = nn.unbox(module.init(jax.random.key(0), x))
    y, deferred = module.apply(params, x)
    if kind == "sincos":
        assert params == {} and not deferred
        np.testing.assert_array_equal(y, x + sincos_2d(2, 3, 8)[None])
        return
    table = params["params"]["posemb"]["embedding"]
    assert table.shape == (6 + class_token_posemb, 8)  # a row for the cls token with it
    assert deferred == class_token_posemb  # the Tower adds it after its class tokens
    np.testing.assert_array_equal(y, x if class_token_posemb else x + table[None])
