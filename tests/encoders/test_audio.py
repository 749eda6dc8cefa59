"""Tests for mmtx.encoders.audio.AudioEncoder (AST over log-mel patches)."""

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import SHIFT_INVARIANT, random_params

from mmtx.encoders import AudioEncoder
from mmtx.nn import log_mel_spectrogram
from mmtx.nn.kaldi_fbank import AST_MEL_FLOOR

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


# ------------------------------------------------------------------ architecture options

AST_SAMPLES, AST_MELS, AST_PATCH, AST_STRIDE = 4400, 36, (16, 16), (10, 10)


@functools.cache
def built_ast(pooling="cls_distill", **options):
    """AST's patching (16 x 16 patches every 10 frames / mel bins) at a small size."""
    encoder = AudioEncoder(
        width=D, depth=1, num_heads=2, mlp_dim=32, num_samples=AST_SAMPLES, window_length=WINDOW,
        hop_length=HOP, num_mel_bins=AST_MELS, patch_size=AST_PATCH, patch_stride=AST_STRIDE,
        pooling=pooling, position_embedding="learned", **options,
    )  # fmt: skip
    audio = waveforms(AST_SAMPLES)
    return encoder, flax.linen.unbox(random_params(encoder, audio)), jax.jit(encoder.apply)


def test_overlapping_patches_equal_explicit_patches_times_the_kernel():
    _, params, apply = built_ast(patch_bias=True)
    p = params["params"]
    _, out = apply(params, waveforms(AST_SAMPLES))
    log_mel = np.asarray(out["log_mel"], np.float64)  # [B, F, M]
    frames_, mels = log_mel.shape[1:]
    grid_t = (frames_ - AST_PATCH[0]) // AST_STRIDE[0] + 1
    grid_f = (mels - AST_PATCH[1]) // AST_STRIDE[1] + 1
    assert (grid_t, grid_f) == (2, 3)  # patches overlap on both axes
    patches = np.stack(
        [
            log_mel[:, t * 10 : t * 10 + 16, f * 10 : f * 10 + 16].reshape(B, -1)
            for t in range(grid_t)  # time-major: all mel patches of the first time step first
            for f in range(grid_f)
        ],
        axis=1,
    )
    kernel = np.asarray(p["patches"]["projection"]["kernel"], np.float64).reshape(16 * 16, D)
    want = patches @ kernel + np.asarray(p["patches"]["projection"]["bias"])
    want = want + np.asarray(p["posemb"]["embedding"])
    np.testing.assert_allclose(np.asarray(out["stem"]), want, atol=1e-4)


def test_cls_distill_pools_the_mean_of_the_two_class_tokens():
    _, params, apply = built_ast()
    tower = params["params"]["tower"]
    assert tower["cls"].shape == tower["distill"].shape == (1, 1, D)
    x, out = apply(params, waveforms(AST_SAMPLES))
    assert x.shape == (B, 2 + 6, D) and out["mask"].shape == (B, 8)
    np.testing.assert_allclose(
        np.asarray(out["pooled"]), (np.asarray(x[:, 0]) + np.asarray(x[:, 1])) / 2, atol=1e-6
    )


def test_class_token_posemb_with_cls_distill_and_no_patch_bias():
    """AST's layout: a [2 + N, D] table, rows 0 and 1 for the cls and distill tokens."""
    _, params, apply = built_ast(class_token_posemb=True, patch_bias=False)
    p = params["params"]
    assert p["posemb"]["embedding"].shape == (2 + 6, D)
    assert set(p["patches"]["projection"]) == {"kernel"}
    x, _ = apply(params, waveforms(AST_SAMPLES))
    # The same as adding rows 0 and 1 to the class tokens and the rest to the patches.
    _, plain_params, plain_apply = built_ast(patch_bias=False)
    moved = jax.tree.map(lambda a: a, plain_params)
    table = p["posemb"]["embedding"]
    moved["params"]["patches"] = p["patches"]
    moved["params"]["posemb"]["embedding"] = table[2:]
    moved["params"]["tower"] = dict(p["tower"])
    moved["params"]["tower"]["cls"] = p["tower"]["cls"] + table[0]
    moved["params"]["tower"]["distill"] = p["tower"]["distill"] + table[1]
    want, _ = plain_apply(moved, waveforms(AST_SAMPLES))
    np.testing.assert_allclose(np.asarray(x), np.asarray(want), atol=1e-5)


def test_ast_options_gradients_reach_every_param():
    _, params, apply = built_ast(class_token_posemb=True, pre_norm=True, norm_eps=1e-12)
    audio = waveforms(AST_SAMPLES)
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


# ------------------------------------------------------------------ clip lengths (audio_length)

SHORT = 1000  # real samples of clip 0: frames 0..3 lie inside it, frame 4 reaches past it
MEAN, STD = -4.0, 4.0


def test_kaldi_fbank_lengths_pad_the_filterbank_past_each_clip():
    """With lengths, a frame reaching past its clip's end is 0.0 before the normalisation
    (AST's extractor pads the filterbank); without, the zero-padded waveform's frames."""
    _, params, apply = built_ast(frontend="kaldi_fbank", log_mel_mean=MEAN, log_mel_std=STD)
    audio = waveforms(AST_SAMPLES).at[0, SHORT:].set(0.0)
    lengths = jnp.asarray([SHORT, AST_SAMPLES], jnp.int32)
    _, plain = apply(params, audio)
    _, padded = apply(params, audio, lengths)
    inside = frames(SHORT)
    assert inside == 4
    got, want = np.asarray(padded["log_mel"]), np.asarray(plain["log_mel"])
    np.testing.assert_array_equal(got[0, inside:], (0.0 - MEAN) / STD)
    np.testing.assert_array_equal(got[0, :inside], want[0, :inside])
    np.testing.assert_array_equal(got[1], want[1])  # a full-length clip is untouched
    assert np.abs(np.asarray(padded["pooled"][0] - plain["pooled"][0])).max() > 1e-3
    np.testing.assert_allclose(padded["pooled"][1], plain["pooled"][1], atol=1e-6)
    # Without lengths the frames of silence past the clip read log(mel floor), normalised.
    silent = (np.log(np.float32(AST_MEL_FLOOR)) - MEAN) / STD
    first_silent = -(-SHORT // HOP)  # the first frame that starts past the clip
    np.testing.assert_allclose(want[0, first_silent:], silent, rtol=1e-6)
    # Lengths of whole clips change nothing.
    _, whole = apply(params, audio, jnp.full((B,), AST_SAMPLES, jnp.int32))
    np.testing.assert_array_equal(np.asarray(whole["log_mel"]), want)
    np.testing.assert_allclose(whole["pooled"], plain["pooled"], atol=1e-6)


def test_the_log_mel_frontend_ignores_lengths():
    """Its frames are those of the zero-padded waveform, as the input pipeline trains it."""
    _, params, apply = built_ast()
    audio = waveforms(AST_SAMPLES).at[0, SHORT:].set(0.0)
    _, plain = apply(params, audio)
    _, given = apply(params, audio, jnp.asarray([SHORT, AST_SAMPLES], jnp.int32))
    np.testing.assert_array_equal(np.asarray(given["log_mel"]), np.asarray(plain["log_mel"]))
    np.testing.assert_allclose(given["pooled"], plain["pooled"], atol=1e-6)


def test_every_spectrogram_option_reaches_the_log_mel_frontend():
    """The encoder's SpectrogramOptions go whole to the frontend: its log-mel is the plain
    function's with each option set off its default, normalised by log_mel_mean/std."""
    spectrogram = dict(
        sample_rate=8000, window_length=200, hop_length=100, num_mel_bins=MELS,
        min_frequency=80.0, max_frequency=3500.0,
    )  # fmt: skip
    encoder = AudioEncoder(
        width=D, depth=1, num_heads=2, mlp_dim=32, num_samples=SAMPLES, patch_size=PATCH,
        log_mel_mean=-3.0, log_mel_std=2.5, **spectrogram,
    )  # fmt: skip
    audio = waveforms()
    _, out = encoder.apply(random_params(encoder, audio), audio)
    want = (np.asarray(log_mel_spectrogram(audio, **spectrogram)) + 3.0) / 2.5
    np.testing.assert_allclose(np.asarray(out["log_mel"]), want, rtol=1e-6, atol=1e-6)
