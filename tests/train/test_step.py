"""Tests for mmtx/train/step.py: gradient accumulation gives the full-batch update.

Contrastive losses couple the batch, so the accumulated step (output cache) must equal the
one-shot step for them too, not just for per-example losses. Every accumulation path is
checked: the output cache unrolled and as a loop, and the plain mean of microbatch gradients
that per-example losses take.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmtx import config as config_lib
from mmtx import losses
from mmtx.data import synthetic
from mmtx.data.pipeline import create_dataset
from mmtx.data.tokenizer import create_tokenizer
from mmtx.models import MultiModalTransformer
from mmtx.train import mesh as mesh_lib
from mmtx.train.loop import create_train_state
from mmtx.train.step import (
    all_finite,
    clamp_logit_scale,
    loss_couples_batch,
    make_train_step,
    merge_microbatches,
    split_microbatches,
    unroll_limit,
    update_ema,
)

B = 8


def tiny_config(contrastive="softmax", classification_weight=1.0, microbatches=1, unroll=8):
    config = config_lib.apply_variant(config_lib.default_config(), "tiny")
    config.model.text.max_length = 16
    config.model.attribute_classes = {"shape": synthetic.NUM_SHAPES}
    config.model.attribute_modalities = {"image": ("shape",)}
    config.loss.attribute_weight = 0.5
    config.loss.contrastive = contrastive
    config.loss.classification_weight = classification_weight
    config.train.batch_size = B
    config.train.microbatches = microbatches
    config.train.accumulation_unroll = unroll
    config.train.warmup_steps = 0
    return config_lib.validate(config)


@functools.cache
def batch():
    config = tiny_config()
    tokenizer = create_tokenizer(config.tokenizer.type, config.tokenizer.model_file)
    data = create_dataset(config, "train", tokenizer, batch_size=B, train=True)
    return next(iter(data))


def one_step(config, tx=None, return_initial=False, loss_fn=losses.total_loss):
    tokenizer = create_tokenizer(config.tokenizer.type, config.tokenizer.model_file)
    module = MultiModalTransformer.from_config(config, vocab_size=tokenizer.vocab_size)
    # Plain SGD with rate 1: the update is minus the gradient. (Adam's first step is about
    # lr * sign(g), which would magnify round-off in near-zero gradients.)
    tx = tx or optax.sgd(1.0)
    mesh = mesh_lib.create_mesh(config.mesh)
    state, _ = create_train_state(module, tx, config, mesh)
    initial = jax.device_get(state)
    step = jax.jit(make_train_step(module, tx, config, loss_fn=loss_fn))
    new_state, metrics = step(state, jax.tree.map(jnp.asarray, batch()))
    if return_initial:
        return initial, new_state, jax.device_get(metrics)
    return new_state, jax.device_get(metrics)


def wrapped_total_loss(outputs, batch, config):
    """The real loss behind a wrapper: the step cannot tell that no term couples the batch,
    so it takes the output cache even for per-example losses."""
    return losses.total_loss(outputs, batch, config)


@functools.cache
def reference_step(contrastive, classification_weight):
    """The full-batch step (k = 1) the accumulated ones are compared with, once per loss."""
    return one_step(tiny_config(contrastive, classification_weight))


@pytest.mark.parametrize(
    "contrastive,classification_weight,unroll,loss_fn",
    [
        ("softmax", 1.0, 8, losses.total_loss),
        ("softmax", 1.0, 0, losses.total_loss),
        ("sigmoid", 0.0, 8, losses.total_loss),
        ("none", 1.0, 8, losses.total_loss),
        ("none", 1.0, 0, losses.total_loss),
        ("none", 1.0, 8, wrapped_total_loss),
    ],
    ids=[
        "softmax+classification-unrolled",
        "softmax+classification-scan",
        "sigmoid-unrolled",
        "classification-plain-sum-unrolled",
        "classification-plain-sum-scan",
        "classification-output-cache",
    ],
)
def test_accumulated_step_equals_full_batch_step(
    contrastive, classification_weight, unroll, loss_fn
):
    reference, reference_metrics = reference_step(contrastive, classification_weight)
    # k = 2 too on the main path; the other paths at k = 4 only (each k compiles a step).
    main_path = contrastive == "softmax" and unroll and loss_fn is losses.total_loss
    for k in (2, 4) if main_path else (4,):
        config = tiny_config(contrastive, classification_weight, k, unroll)
        state, metrics = one_step(config, loss_fn=loss_fn)
        assert set(metrics) == set(reference_metrics)
        for name, value in reference_metrics.items():
            np.testing.assert_allclose(metrics[name], value, rtol=2e-5, atol=1e-6, err_msg=name)
        paths = jax.tree_util.tree_leaves_with_path(state.params)
        for (path, got), want in zip(paths, jax.tree.leaves(reference.params), strict=True):
            # Params moved by minus the gradient: compare at the gradient's own scale.
            scale = max(float(np.abs(want).max()), 1e-3)
            np.testing.assert_allclose(
                got, want, rtol=0, atol=1e-5 * scale, err_msg=f"k={k} {jax.tree_util.keystr(path)}"
            )
        # The update is not trivially zero: params moved.
        assert reference_metrics["grad_norm"] > 0


def test_only_a_contrastive_term_between_two_towers_couples_the_batch():
    assert loss_couples_batch(tiny_config("softmax"))
    assert loss_couples_batch(tiny_config("sigmoid"))
    assert not loss_couples_batch(tiny_config("none"))
    config = tiny_config("softmax")
    config.loss.contrastive_weight = 0.0
    assert not loss_couples_batch(config)
    config = tiny_config("softmax")
    config.model.modalities = ("image",)
    assert not loss_couples_batch(config)


def test_unroll_limit_auto_is_8_on_cpu_and_explicit_values_stand():
    assert jax.default_backend() == "cpu"
    assert unroll_limit(tiny_config(unroll=-1)) == 8
    assert unroll_limit(tiny_config(unroll=0)) == 0
    assert unroll_limit(tiny_config(unroll=3)) == 3


def nan_loss(outputs, batch, config):
    loss, metrics = losses.total_loss(outputs, batch, config)
    return loss * jnp.nan, metrics


@pytest.mark.parametrize("microbatches", [1, 2], ids=["full-batch", "output-cache"])
def test_a_wrapped_nan_loss_is_flagged_and_leaves_the_state(microbatches):
    before, after, metrics = one_step(
        tiny_config(microbatches=microbatches), return_initial=True, loss_fn=nan_loss
    )
    assert np.isnan(metrics["loss"]) and metrics["nonfinite"] == 1.0
    assert int(after.step) == 1
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(after.params), before.params)


def test_split_and_merge_are_inverse_and_strided():
    x = jnp.arange(8 * 3).reshape(8, 3)
    micro = split_microbatches({"x": x}, 4)["x"]
    assert micro.shape == (4, 2, 3)
    np.testing.assert_array_equal(micro[1], x[1::4])
    merged = merge_microbatches({"x": micro, "scale": jnp.full((4,), 2.0)}, 8)
    np.testing.assert_array_equal(merged["x"], x)
    assert merged["scale"].shape == ()


def test_batch_must_divide_into_microbatches():
    config = tiny_config()
    config.train.microbatches = 3
    with pytest.raises(ValueError, match=r"config\.train\.microbatches"):
        config_lib.validate(config)


def test_all_finite_counts_huge_values_as_finite():
    assert bool(all_finite({"a": jnp.full((3,), 3e38), "b": jnp.zeros(2)}))
    assert not bool(all_finite({"a": jnp.ones(3), "b": jnp.array([0.0, jnp.nan])}))
    assert not bool(all_finite([jnp.array([-jnp.inf])]))


def test_an_update_that_makes_params_nonfinite_is_rejected():
    """With finite loss and gradients, an infinite learning rate (or a NaN weight decay)
    made every param non-finite, and that state was checkpointed; the step must refuse it."""
    infinite_rate = optax.chain(optax.sgd(1.0), optax.scale(float("inf")))
    before, after, metrics = one_step(tiny_config(), tx=infinite_rate, return_initial=True)
    assert np.isfinite(metrics["loss"]) and np.isfinite(metrics["grad_norm"])
    assert metrics["nonfinite"] == 1.0
    assert int(after.step) == 1
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(after.params), before.params)


def _logit_scale_step(temperature, learning_rate=1.0):
    """(logit_scale before, after) of one plain-SGD step from ``temperature``."""
    config = tiny_config()
    config.model.temperature_init = temperature
    before, after, _ = one_step(config, tx=optax.sgd(learning_rate), return_initial=True)
    return float(before.params["logit_scale"]), float(after.params["logit_scale"])


def test_logit_scale_at_the_cap_gets_the_full_gradient_as_in_open_clip():
    """Imported CLIP checkpoints sit at logit_scale = log 100, the cap. open_clip uses
    exp(logit_scale) in the loss and clamps the param after the update, so its gradient
    there is the uncapped one; a jnp.minimum cap split the gradient on the tie (half)."""
    at_cap, after_at_cap = _logit_scale_step(0.01)
    assert at_cap == pytest.approx(np.float32(np.log(100.0)))
    below, after_below = _logit_scale_step(0.01 * np.exp(1e-3))
    assert below < at_cap
    gradient_at_cap, gradient_below = at_cap - after_at_cap, below - after_below
    # Random embeddings: the loss falls with a lower scale, so the step moves down, away
    # from the cap, and the clamp leaves it alone.
    assert gradient_below > 0
    np.testing.assert_allclose(gradient_at_cap, gradient_below, rtol=0.05)


def test_logit_scale_is_clamped_to_log_100_after_the_update():
    """Gradient ascent pushes logit_scale up from the cap; the step clamps it back, as CLIP
    does after every optimizer update."""
    at_cap, after = _logit_scale_step(0.01, learning_rate=-1.0)
    assert after == np.float32(at_cap)
    assert after == np.float32(np.log(100.0))


def test_clamp_logit_scale_bounds_and_leaves_other_params():
    params = {"logit_scale": jnp.float32(7.0), "w": jnp.ones(2)}
    assert float(clamp_logit_scale(params)["logit_scale"]) == np.float32(np.log(100.0))
    assert (
        float(clamp_logit_scale({**params, "logit_scale": jnp.float32(-1.0)})["logit_scale"]) == 0
    )
    assert float(clamp_logit_scale({**params, "logit_scale": jnp.float32(2.0)})["logit_scale"]) == 2
    assert clamp_logit_scale(params)["w"] is params["w"]
    assert clamp_logit_scale({"w": params["w"]}) == {"w": params["w"]}


def test_ema_is_the_moving_average_of_the_trained_params():
    config = tiny_config()
    config.train.ema_decay = 0.75
    before, after, _ = one_step(config, return_initial=True)
    assert before.ema_params is not None

    def check(initial, new, ema):
        want = np.float32(0.75) * np.asarray(initial) + np.float32(0.25) * np.asarray(new)
        np.testing.assert_allclose(np.asarray(ema), want, rtol=1e-6, atol=1e-7)

    # The average starts at the initial params and moves a quarter of the way each step.
    jax.tree.map(np.testing.assert_array_equal, before.ema_params, before.params)
    jax.tree.map(
        check, before.params, jax.device_get(after.params), jax.device_get(after.ema_params)
    )
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: np.any(a != b), before.params, after.params))
    assert any(moved)


def test_ema_of_frozen_params_is_bit_identical_and_off_means_none():
    config = tiny_config()
    config.train.ema_decay = 0.5
    config.train.frozen = ("^image/",)
    before, after, _ = one_step(config, return_initial=True)
    jax.tree.map(
        np.testing.assert_array_equal,
        before.ema_params["image"],
        jax.device_get(after.ema_params["image"]),
    )
    _, plain, _ = one_step(tiny_config(), return_initial=True)
    assert plain.ema_params is None


def test_update_ema_rule():
    mask = {"a": True, "b": False}
    ema = {"a": jnp.float32(1.0), "b": jnp.float32(-0.0)}
    params = {"a": jnp.float32(3.0), "b": jnp.float32(5.0)}
    out = update_ema(ema, params, mask, 0.9)
    assert float(out["a"]) == np.float32(0.9) * 1 + np.float32(1 - 0.9) * 3
    assert np.signbit(out["b"]) and float(out["b"]) == 0  # frozen: kept bit for bit
    assert update_ema(None, params, mask, 0.9) is None
