"""Tests for mmtx/train/optimizer.py: schedule, weight-decay mask, clipping and AdamW updates."""

import itertools
import math

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmtx import config as config_lib
from mmtx.train.optimizer import (
    create_optimizer,
    layer_scales,
    learning_rate_schedule,
    weight_decay_mask,
)


def train_config(**overrides):
    train = config_lib.default_config().train
    train.update(overrides)
    return train


def reference_lr(train, step: int) -> float:
    """Linear warmup 0 -> peak over warmup_steps, then cosine to peak * factor at ``steps``."""
    peak, warmup = train.learning_rate, train.warmup_steps
    end = peak * train.end_learning_rate_factor
    if step < warmup:
        return peak * step / warmup
    progress = min((step - warmup) / max(train.steps - warmup, 1), 1.0)
    return end + (peak - end) * 0.5 * (1 + math.cos(math.pi * progress))


def test_schedule_key_points_of_default_config():
    train = train_config()
    schedule = jax.jit(learning_rate_schedule(train))
    peak = train.learning_rate
    assert float(schedule(0)) == 0.0
    np.testing.assert_allclose(float(schedule(train.warmup_steps)), peak, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(train.warmup_steps // 2)), peak / 2, rtol=1e-6)
    np.testing.assert_allclose(
        float(schedule(train.steps)), peak * train.end_learning_rate_factor, rtol=1e-5
    )
    np.testing.assert_allclose(
        float(schedule(train.steps + 100)), peak * train.end_learning_rate_factor, rtol=1e-5
    )
    steps = [1, 37, 99, 100, 101, 500, 1050, 1999, 2000]
    np.testing.assert_allclose(
        schedule(jnp.asarray(steps)), [reference_lr(train, s) for s in steps], rtol=1e-5
    )
    values = schedule(jnp.arange(train.warmup_steps, train.steps + 1, 50)).tolist()
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_schedule_without_warmup_starts_at_peak():
    train = train_config(warmup_steps=0, steps=10, learning_rate=0.5, end_learning_rate_factor=0.1)
    schedule = jax.jit(learning_rate_schedule(train))
    np.testing.assert_allclose(float(schedule(0)), 0.5, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(10)), 0.05, rtol=1e-5)
    np.testing.assert_allclose(float(schedule(5)), reference_lr(train, 5), rtol=1e-5)


def test_schedule_with_steps_not_above_warmup_still_reaches_peak():
    train = train_config(warmup_steps=10, steps=10, learning_rate=0.2)
    schedule = jax.jit(learning_rate_schedule(train))
    np.testing.assert_allclose(float(schedule(5)), 0.1, rtol=1e-6)
    np.testing.assert_allclose(float(schedule(10)), 0.2, rtol=1e-6)


def params_tree():
    return {
        "Dense_0": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones((3,))},
        "LayerNorm_0": {"scale": jnp.ones((3,)), "bias": jnp.zeros((3,))},
        "Embed_0": {"embedding": jnp.ones((4, 3))},
        "blocks": {"attn": {"kernel": jnp.ones((3, 3)), "kernel_scale": jnp.ones(())}},
        "kernel": {"bias": jnp.ones((1,))},  # a *module* named kernel is not a kernel leaf
        "pos": [jnp.ones((2,))],
    }


def test_weight_decay_mask_only_kernel_leaves():
    mask = weight_decay_mask(params_tree())
    assert mask == {
        "Dense_0": {"kernel": True, "bias": False},
        "LayerNorm_0": {"scale": False, "bias": False},
        "Embed_0": {"embedding": False},
        "blocks": {"attn": {"kernel": True, "kernel_scale": False}},
        "kernel": {"bias": False},
        "pos": [False],
    }


def test_weight_decay_mask_on_frozen_dict():
    frozen = flax.core.freeze({"params": {"Dense_0": {"kernel": jnp.ones((2, 2)), "bias": 0.0}}})
    mask = flax.core.unfreeze(weight_decay_mask(frozen))
    assert mask == {"params": {"Dense_0": {"kernel": True, "bias": False}}}


def reference_adamw(train, params, grads_sequence, decay_mask, multipliers=None):
    """AdamW (optax order: adam, masked decoupled decay, -lr) with optional global-norm clip;
    ``multipliers`` scale each param's whole update (layer-wise learning-rate decay)."""
    eps = 1e-8
    params = {k: np.asarray(v, np.float64) for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(p) for k, p in params.items()}
    for t, grads in enumerate(grads_sequence):
        grads = {k: np.asarray(g, np.float64) for k, g in grads.items()}
        if train.grad_clip:
            norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
            if norm > train.grad_clip:
                grads = {k: g * train.grad_clip / norm for k, g in grads.items()}
        lr = reference_lr(train, t)
        for k in params:
            m[k] = train.b1 * m[k] + (1 - train.b1) * grads[k]
            v[k] = train.b2 * v[k] + (1 - train.b2) * grads[k] ** 2
            m_hat = m[k] / (1 - train.b1 ** (t + 1))
            v_hat = v[k] / (1 - train.b2 ** (t + 1))
            update = m_hat / (np.sqrt(v_hat) + eps)
            if decay_mask[k]:
                update = update + train.weight_decay * params[k]
            params[k] = params[k] - lr * update * (multipliers or {}).get(k, 1.0)
    return params


def run_optimizer(tx, params, grads_sequence):
    """Applies ``tx`` to each gradient in turn (all in one jitted function)."""

    @jax.jit
    def run(params, grads_sequence):
        state = tx.init(params)
        for grads in grads_sequence:
            updates, state = tx.update(grads, state, params)
            params = optax.apply_updates(params, updates)
        return params

    return run(params, grads_sequence)


@pytest.mark.parametrize("grad_clip", [1.0, 0.0])
def test_create_optimizer_matches_reference_adamw(grad_clip):
    train = train_config(
        grad_clip=grad_clip, warmup_steps=2, steps=5, learning_rate=0.1, weight_decay=0.3
    )
    params = {"kernel": jnp.asarray([[1.0, -2.0], [0.5, 3.0]]), "bias": jnp.asarray([1.0, -1.0])}
    # A huge first gradient, then small ones of the opposite sign on the same coordinates:
    # clipping keeps the huge step from dominating Adam's moments, so the results differ.
    grads_sequence = [
        {"kernel": jnp.full((2, 2), 1e6), "bias": jnp.asarray([1e6, -1e6])},
        {"kernel": jnp.full((2, 2), -0.1), "bias": jnp.asarray([-0.1, 0.1])},
        {"kernel": jnp.full((2, 2), -0.2), "bias": jnp.asarray([-0.2, 0.2])},
    ]
    got = run_optimizer(create_optimizer(train), params, grads_sequence)
    want = reference_adamw(train, params, grads_sequence, {"kernel": True, "bias": False})
    for k in params:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6)
    other = reference_adamw(
        train_config(**{**train.to_dict(), "grad_clip": 1.0 - grad_clip}),
        params,
        grads_sequence,
        {"kernel": True, "bias": False},
    )
    assert np.abs(other["bias"] - want["bias"]).max() > 1e-2  # clipping matters here


def test_create_optimizer_huge_gradient_gives_bounded_update():
    train = train_config(grad_clip=1.0, warmup_steps=0, steps=10, learning_rate=0.01)
    tx = create_optimizer(train)
    params = {"kernel": jnp.zeros((3, 4)), "bias": jnp.zeros((4,))}
    grads = {"kernel": jnp.full((3, 4), 1e15), "bias": jnp.full((4,), -1e15)}
    updates, state = jax.jit(lambda g, p: tx.update(g, tx.init(p), p))(grads, params)
    for leaf in jax.tree.leaves(updates):
        assert np.all(np.isfinite(leaf))
        assert np.max(np.abs(leaf)) <= 0.01 * (1 + 1e-5)
    # The clip is applied before Adam: its state sees the clipped gradient (global norm 1).
    mu = optax.tree_utils.tree_get(state, "mu")
    norm = math.sqrt(sum(float(jnp.sum(x * x)) for x in jax.tree.leaves(mu)))
    np.testing.assert_allclose(norm, (1 - train.b1) * 1.0, rtol=1e-5)


def test_weight_decay_shrinks_kernel_not_bias_with_zero_gradient():
    train = train_config(warmup_steps=0, steps=100, learning_rate=0.1, weight_decay=0.5)
    tx = create_optimizer(train)
    params = params_tree()
    zeros = jax.tree.map(jnp.zeros_like, params)
    new = run_optimizer(tx, params, [zeros])
    lr = float(learning_rate_schedule(train)(0))
    np.testing.assert_allclose(new["Dense_0"]["kernel"], 1.0 - lr * 0.5, rtol=1e-6)
    np.testing.assert_allclose(new["blocks"]["attn"]["kernel"], 1.0 - lr * 0.5, rtol=1e-6)
    for path in (
        ("Dense_0", "bias"),
        ("LayerNorm_0", "scale"),
        ("Embed_0", "embedding"),
        ("blocks", "attn", "kernel_scale"),
        ("kernel", "bias"),
    ):
        leaf = new
        for key in path:
            leaf = leaf[key]
        old = params
        for key in path:
            old = old[key]
        np.testing.assert_array_equal(leaf, old)
    np.testing.assert_array_equal(new["pos"][0], params["pos"][0])


# Fine-tuning: frozen params, layer-wise learning-rate decay.


def test_frozen_params_get_zero_updates_no_state_and_do_not_enter_the_clip():
    train = train_config(
        grad_clip=1.0, warmup_steps=0, steps=5, learning_rate=0.1, weight_decay=0.3
    )
    train.frozen = ("^frozen/",)
    params = {
        "kernel": jnp.asarray([[1.0, -2.0], [0.5, 3.0]]),
        "bias": jnp.asarray([1.0, -1.0]),
        "frozen": {"kernel": jnp.ones((2, 2))},
    }
    # The frozen param's huge gradient would shrink the others' by clipping if it counted.
    grads_sequence = [
        {"kernel": jnp.full((2, 2), 0.3), "bias": jnp.asarray([0.2, -0.1]),
         "frozen": {"kernel": jnp.full((2, 2), 1e6)}},
        {"kernel": jnp.full((2, 2), -0.1), "bias": jnp.asarray([-0.1, 0.1]),
         "frozen": {"kernel": jnp.full((2, 2), -1e6)}},
    ]  # fmt: skip
    tx = create_optimizer(train)
    got = run_optimizer(tx, params, grads_sequence)
    trained = [{k: g[k] for k in ("kernel", "bias")} for g in grads_sequence]
    want = reference_adamw(
        train, {k: params[k] for k in ("kernel", "bias")}, trained, {"kernel": True, "bias": False}
    )
    for k in ("kernel", "bias"):
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6)
    # No decay, no update: exactly the initial value.
    np.testing.assert_array_equal(got["frozen"]["kernel"], params["frozen"]["kernel"])
    # Adam's moments exist for the two trainable params only.
    state = tx.init(params)
    moments = jax.tree.leaves(
        [mu for _, mu in optax.tree_utils.tree_get_all_with_path(state, "mu")]
    )
    assert sorted(x.size for x in moments) == [2, 4]
    # the moments plus two step counters (Adam's, the schedule's)
    assert sum(x.size for x in jax.tree.leaves(state)) == 2 * (2 + 4) + 2


def test_without_freezing_or_layer_decay_the_state_is_the_plain_chain():
    """Checkpoints of runs from before fine-tuning existed must still restore."""
    train = train_config()
    params = {"kernel": jnp.ones((2, 2))}
    state = create_optimizer(train).init(params)
    adamw = optax.adamw(
        learning_rate_schedule(train), weight_decay=train.weight_decay, mask=weight_decay_mask
    )
    plain = optax.chain(optax.clip_by_global_norm(train.grad_clip), adamw).init(params)
    assert jax.tree.structure(state) == jax.tree.structure(plain)


def tower_params(scan_layers, image_depth=3):
    """The param shapes of a text + image + concat-fusion model (no compile)."""
    from mmtx.models import MultiModalTransformer, dummy_batch

    config = config_lib.apply_variant(config_lib.default_config(), "tiny")
    config.model.modalities = ("text", "image")
    config.model.scan_layers = scan_layers
    config.model.image.depth = image_depth
    config.model.image.pre_norm = True
    config.model.text.max_length = 8
    config.model.image.image_size = 16
    module = MultiModalTransformer.from_config(config, vocab_size=50)
    boxed = jax.eval_shape(
        lambda r: module.init(r, dummy_batch(config, 1), train=False)["params"],
        jax.random.key(0),
    )
    return flax.linen.meta.unbox(boxed)


def expected_multiplier(path, d):
    """The rule written out by hand for a depth-3 image tower and a depth-1 text tower."""
    depth = {"image": 3, "text": 1}
    tower = path.split("/")[0]
    if tower not in depth:  # heads, fusion, logit_scale
        return 1.0
    L = depth[tower]
    if "/encoder/blocks/" in path:
        return np.asarray([d ** (L - i) for i in range(L)])
    if "/encoder/block_" in path:
        i = int(path.split("/encoder/block_")[1].split("/")[0])
        return d ** (L - i)
    if path.startswith(f"{tower}/tower/encoder/norm/"):
        return 1.0
    # patches, posemb, token_embed, cls, pre_norm
    assert any(name in path for name in ("patches", "posemb", "token_embed", "cls", "pre_norm"))
    return d ** (L + 1)


@pytest.mark.parametrize("scan_layers", [True, False], ids=["scanned", "unrolled"])
def test_layer_scales_follow_the_hand_written_rule(scan_layers):
    params = tower_params(scan_layers)
    scales = layer_scales(params, 0.5)
    paths = [jax.tree_util.keystr(p, simple=True, separator="/") for p, _ in
             jax.tree_util.tree_leaves_with_path(params)]  # fmt: skip
    assert any("/encoder/block" in p for p in paths) and "image/tower/pre_norm/scale" in paths
    for path, scale, leaf in zip(
        paths, jax.tree.leaves(scales), jax.tree.leaves(params), strict=True
    ):
        want = expected_multiplier(path, 0.5)
        if np.ndim(want):  # one per layer along the scanned axis, broadcastable to the leaf
            assert np.shape(scale) == (leaf.shape[0],) + (1,) * (leaf.ndim - 1), path
            np.testing.assert_allclose(np.ravel(scale), want, rtol=1e-6, err_msg=path)
        else:
            np.testing.assert_allclose(scale, want, rtol=1e-6, err_msg=path)


def test_layer_decay_scales_the_whole_adamw_update_per_layer():
    # No clipping: the reference below runs per param (a global norm would couple them).
    train = train_config(
        grad_clip=0.0, warmup_steps=0, steps=5, learning_rate=0.1, weight_decay=0.3
    )
    train.layer_decay = 0.5
    blocks = "image/tower/encoder/blocks/mlp/fc1/kernel"
    params = {
        "image": {
            "tower": {"encoder": {"blocks": {"mlp": {"fc1": {"kernel": jnp.ones((2, 3, 2))}}}}},
            "patches": {"projection": {"bias": jnp.asarray([1.0, -1.0])}},
        },
        "image_head": {"kernel": jnp.asarray([[1.0, -2.0], [0.5, 3.0]])},
    }
    flat_keys = {blocks: ("image", "tower", "encoder", "blocks", "mlp", "fc1", "kernel"),
                 "patches": ("image", "patches", "projection", "bias"),
                 "head": ("image_head", "kernel")}  # fmt: skip

    def get(tree, keys):
        for key in keys:
            tree = tree[key]
        return tree

    rng = np.random.default_rng(0)
    grads_sequence = [
        jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
        for _ in range(3)
    ]
    got = run_optimizer(create_optimizer(train), params, grads_sequence)
    # Reference: AdamW per param, each update (decay included) times its multiplier:
    # depth 2 -> blocks [0.25, 0.5] along axis 0, embeddings 0.125, head 1.
    multipliers = {blocks: np.asarray([0.25, 0.5]).reshape(2, 1, 1), "patches": 0.125, "head": 1}
    for name, keys in flat_keys.items():
        want = reference_adamw(
            train,
            {"p": get(params, keys)},
            [{"p": get(g, keys)} for g in grads_sequence],
            {"p": keys[-1] == "kernel"},
            multipliers={"p": multipliers[name]},
        )["p"]
        np.testing.assert_allclose(get(got, keys), want, rtol=1e-5, atol=1e-6, err_msg=name)
