"""Tests for mmtx.encoders.audio.AudioEncoder (AST over log-mel patches)."""

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import SHIFT_INVARIANT, random_params

from mmtx.encoders import AudioEncoder

B, D = 2, 16
SAMPLES, WINDOW, HOP, MELS, PATCH = 1600, 400, 160, 16, (4, 8)


def frames(samples):
    return 1 + (samples - WINDOW) // HOP


def waveforms(samples=SAMPLES, batch=B, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(batch, samples)), jnp.float32)


@functools.cache
def built(pooling, position_embedding, dtype=jnp.float32):
    encoder = AudioEncoder(
        width=D, depth=1, num_heads=2, mlp_dim=32, num_samples=SAMPLES, window_length=WINDOW,
        hop_length=HOP, num_mel_bins=MELS, patch_size=PATCH, log_mel_mean=-4.0,
        log_mel_std=4.0, pooling=pooling, position_embedding=position_embedding, dtype=dtype,
    )  # fmt: skip
    return encoder, random_params(encoder, waveforms()), jax.jit(encoder.apply)


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
    x, out = apply(params, waveforms())
    n = (frames(SAMPLES) // PATCH[0]) * (MELS // PATCH[1])
    length = n + 1 if pooling == "cls" else n
    assert x.shape == (B, length, D) and x.dtype == dtype
    assert out["pooled"].shape == (B, D) and out["pooled"].dtype == dtype
    assert out["stem"].shape == (B, n, D)
    assert out["mask"].shape == (B, length) and bool(out["mask"].all())
    # The log-mel frontend always computes in float32, whatever the compute dtype.
    assert out["log_mel"].shape == (B, frames(SAMPLES), MELS)
    assert out["log_mel"].dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(out["pooled"].astype(jnp.float32))))


def test_sincos_works_for_two_clip_lengths():
    _, params, apply = built("mean", "sincos", jnp.bfloat16)
    short, long = SAMPLES, 2 * SAMPLES + 400
    x_short, out_short = apply(params, waveforms(short))
    x_long, out_long = apply(params, waveforms(long))
    n_short = (frames(short) // PATCH[0]) * (MELS // PATCH[1])
    n_long = (frames(long) // PATCH[0]) * (MELS // PATCH[1])
    assert n_long > n_short
    assert x_short.shape == (B, n_short, D) and x_long.shape == (B, n_long, D)
    assert out_short["pooled"].shape == out_long["pooled"].shape == (B, D)
    assert bool(jnp.all(jnp.isfinite(out_long["pooled"].astype(jnp.float32))))


def test_learned_positions_need_the_configured_length():
    encoder, params, _ = built("cls", "learned")
    with pytest.raises(flax.errors.ScopeParamShapeError):
        jax.eval_shape(encoder.apply, params, waveforms(2 * SAMPLES))


@pytest.mark.parametrize("shape", [(SAMPLES,), (B, SAMPLES, 1), (B, 1, SAMPLES, 2)])
def test_wrong_rank_raises(shape):
    encoder, params, _ = built("cls", "learned")
    with pytest.raises(ValueError, match=r"\[batch, samples\]"):
        jax.eval_shape(encoder.apply, params, jnp.zeros(shape, jnp.float32))


@pytest.mark.parametrize("samples", [WINDOW - 1, WINDOW + HOP])  # < 1 window; < 1 patch
def test_too_short_clip_raises(samples):
    encoder, params, _ = built("mean", "sincos", jnp.bfloat16)
    with pytest.raises(ValueError, match="samples"):
        jax.eval_shape(encoder.apply, params, waveforms(samples))


def test_gradients_reach_every_param():
    _, params, apply = built("cls", "learned")
    audio = waveforms()
    w = np.random.default_rng(3).normal(size=(B, D)).astype(np.float32)

    @jax.jit
    @jax.grad
    def grad(p):
        return jnp.sum(apply(p, audio)[1]["pooled"] * w)

    for path, g in jax.tree_util.tree_leaves_with_path(grad(params)):
        name = jax.tree_util.keystr(path)
        assert bool(jnp.all(jnp.isfinite(g))), f"non-finite gradient for {name}"
        if not any(s in name for s in SHIFT_INVARIANT):
            assert bool(jnp.any(g != 0)), f"zero gradient for {name}"
