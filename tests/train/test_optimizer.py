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
from mmtx.train.optimizer import create_optimizer, learning_rate_schedule, weight_decay_mask


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


def reference_adamw(train, params, grads_sequence, decay_mask):
    """AdamW (optax order: adam, masked decoupled decay, -lr) with optional global-norm clip."""
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
            params[k] = params[k] - lr * update
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
