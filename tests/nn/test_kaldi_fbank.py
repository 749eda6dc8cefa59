"""mmtx.nn.kaldi_fbank against transformers 5.24's ASTFeatureExtractor (numpy path).

The fixture is written by benchmarks/peers/make_fbank_fixture.py (its docstring says how):
three 16 kHz clips (noise 73 frames, chirp + faint noise 67 frames, noise/silence/tone 36
frames), the extractor's raw fbank of each and its normalised output at max_length=64.
"""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmtx.nn import KaldiFbank, kaldi_fbank
from mmtx.nn.kaldi_fbank import (
    AST_MEAN,
    AST_MEL_FLOOR,
    AST_STD,
    frame_geometry,
    kaldi_mel_filterbank,
    num_frames,
    window,
)

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "kaldi_fbank.npz"

# Measured max abs error of float32 mmtx (jitted, CPU, jax 0.10.2) vs the extractor's float64
# numpy: clip 0 (noise) 7.6e-5 and clip 2 (noise/silence/tone) 7.3e-5 over every cell (8.8e-5
# and 5.1e-5 run eagerly, op by op). Clip 1 (a clean chirp): 4.1e-5 where a band is within 12
# nepers (52 dB of power) of its frame's loudest band, 9.7e-5 within 15, 8.3e-3 overall. The
# rest is float32 round-off of the FFT, which is relative to the frame's energy, not to the
# band's: a band d nepers below the frame's loudest carries a log error growing like
# exp(d / 2); only a synthetic tone has bands 20-30 nepers (90-130 dB) down. After AST's
# normalisation (/ 9.14): 9.7e-6 (noise clips), 1.1e-3 (chirp). torchaudio's own fbank, which
# AST was trained on, computes in float32 too, so it has round-off of this kind as well.
LOG_MEL_ATOL = 1e-4
DEEP_BAND_COEFF = 2e-7  # Bound atol + DEEP_BAND_COEFF * exp(depth / 2): measured <= 0.48 of it.


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    with np.load(FIXTURE) as data:
        return {key: data[key] for key in data.files}


def _clip(ref: dict[str, np.ndarray], i: int) -> np.ndarray:
    return ref["waveforms"][i, : ref["lengths"][i]]


def test_fixture_settings_are_ast_defaults(ref):
    assert str(ref["transformers_version"]) == "5.24.0"
    assert int(ref["sample_rate"]) == 16000 and int(ref["num_mel_bins"]) == 128
    assert float(ref["mean"]) == AST_MEAN and float(ref["std"]) == AST_STD


def test_mel_filters_equal_transformers(ref):
    ours = kaldi_mel_filterbank(128, 512, 16000, 20.0, 8000.0)
    assert ours.shape == (257, 128) and ours.dtype == np.float64
    np.testing.assert_array_equal(ours, ref["mel_filters"])


@pytest.mark.parametrize("i", [0, 1, 2])
def test_fbank_matches_transformers(ref, i):
    expected = ref[f"fbank_{i}"]
    got = np.asarray(jax.jit(kaldi_fbank)(jnp.asarray(_clip(ref, i))[None]))[0]
    assert got.shape == expected.shape and got.dtype == np.float32
    err = np.abs(got - expected)
    depth = expected.max(axis=1, keepdims=True) - expected  # nepers below the frame's loudest
    near = depth < 12.0
    assert err[near].max() <= LOG_MEL_ATOL, err[near].max()
    if i != 1:  # Noise-filled clips: every band is near, the plain bound holds everywhere.
        assert err.max() <= LOG_MEL_ATOL, err.max()
    bound = LOG_MEL_ATOL + DEEP_BAND_COEFF * np.exp(depth / 2)
    assert np.all(err <= bound), (err / bound).max()


def test_silence_is_log_mel_floor(ref):
    # Clip 2 is digital silence over samples 1500..3200: frames 10..17 are at the floor.
    got = np.asarray(kaldi_fbank(jnp.asarray(_clip(ref, 2))[None]))[0]
    np.testing.assert_array_equal(got[10:18], np.log(np.float32(AST_MEL_FLOOR)))
    np.testing.assert_array_equal(ref["fbank_2"][10:18], got[10:18])


def test_module_matches_extractor_output(ref):
    # One zero-padded batch with per-clip lengths: truncation (clip 0), padding (clip 2).
    max_frames = int(ref["max_length"])
    module = KaldiFbank(max_frames=max_frames)
    out = jax.jit(module.apply)({}, jnp.asarray(ref["waveforms"]), jnp.asarray(ref["lengths"]))
    assert out.shape == (3, max_frames, 128) and out.dtype == jnp.float32
    expected = ref["input_values"]
    err = np.abs(np.asarray(out) - expected)
    # Same bound as the raw log-mel, divided by the normalisation's 2 * std.
    for i in range(3):
        raw = ref[f"fbank_{i}"][:max_frames]
        depth = raw.max(axis=1, keepdims=True) - raw
        bound = (LOG_MEL_ATOL + DEEP_BAND_COEFF * np.exp(depth / 2)) / (2 * AST_STD)
        assert np.all(err[i, : raw.shape[0]] <= bound + 1e-6)
    # Padded rows of clip 2 (36 frames): exactly what the extractor pads, 0.0 normalised.
    pad = np.float32((0.0 - AST_MEAN) / (AST_STD * 2))
    np.testing.assert_array_equal(expected[2, 36:], pad)
    np.testing.assert_allclose(np.asarray(out[2, 36:]), pad, rtol=0, atol=1e-6)


def test_module_without_lengths_and_without_truncation(ref):
    wave = jnp.asarray(_clip(ref, 0))[None]
    full = KaldiFbank(max_frames=0).apply({}, wave)
    raw = kaldi_fbank(wave)
    assert full.shape == (1, 73, 128)
    np.testing.assert_allclose(full, (raw - AST_MEAN) / (2 * AST_STD), rtol=0, atol=1e-6)
    short = KaldiFbank(max_frames=10).apply({}, wave)
    np.testing.assert_array_equal(short, full[:, :10])
    assert KaldiFbank().apply({}, wave).shape == (1, 1024, 128)  # AST's default max_length.


@pytest.mark.parametrize("samples", [400, 401, 559, 560, 561, 16000, 160_000])
def test_frame_count_formula(samples):
    assert frame_geometry(16000, 25.0, 10.0) == (400, 160, 512)
    expected = 1 + (samples - 400) // 160
    assert num_frames(samples, 400, 160) == expected
    out = jax.eval_shape(kaldi_fbank, jax.ShapeDtypeStruct((2, samples), jnp.float32))
    assert out.shape == (2, expected, 128) and out.dtype == jnp.float32


def test_options_change_shape_and_dtype_in():
    audio = jnp.asarray(np.random.default_rng(0).standard_normal((2, 8000)), jnp.bfloat16)
    out = kaldi_fbank(audio, sample_rate=8000, num_mel_bins=23, frame_shift_ms=20.0)
    # 8 kHz: 200-sample frames, 160-sample shift, 256-point FFT.
    assert out.shape == (2, 1 + (8000 - 200) // 160, 23) and out.dtype == jnp.float32
    assert np.all(np.isfinite(out))


def test_windows():
    n = np.arange(400)
    np.testing.assert_allclose(window(400), 0.5 - 0.5 * np.cos(2 * np.pi * n / 399), atol=1e-15)
    np.testing.assert_allclose(
        window(400, "hamming"), 0.54 - 0.46 * np.cos(2 * np.pi * n / 399), atol=1e-15
    )
    np.testing.assert_allclose(window(400, "povey"), window(400) ** 0.85)
    np.testing.assert_array_equal(window(400, "rectangular"), np.ones(400))


def test_gradient_is_finite(ref):
    # Includes silent frames (clip 2), where the floor cuts the gradient to zero.
    wave = jnp.asarray(_clip(ref, 2))[None]
    grad = jax.jit(jax.grad(lambda a: jnp.sum(KaldiFbank(max_frames=64).apply({}, a))))(wave)
    assert grad.shape == wave.shape and grad.dtype == jnp.float32
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)
    # Directional derivative of a fixed linear read-out against a central difference (eps
    # small: log of the weak bands curves fast; 1e-4..1e-3 agree to 0.02-0.4% on CPU).
    audio = jnp.asarray(_clip(ref, 0)[None, :2000])
    weights = jnp.asarray(np.random.default_rng(2).standard_normal((1, 11, 128)), jnp.float32)
    loss = jax.jit(lambda a: jnp.sum(weights * kaldi_fbank(a)))
    direction = jnp.asarray(np.random.default_rng(1).standard_normal(audio.shape), jnp.float32)
    eps = 3e-4
    numeric = (loss(audio + eps * direction) - loss(audio - eps * direction)) / (2 * eps)
    analytic = jnp.vdot(jax.grad(loss)(audio), direction)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-2)


@pytest.mark.parametrize(
    ("shape", "kwargs", "match"),
    [
        ((1, 399), {}, "fewer than one frame"),
        ((400,), {}, r"\[batch, samples\]"),
        ((1, 2, 400), {}, r"\[batch, samples\]"),
        ((1, 800), {"window_type": "blackman"}, "window_type"),
        ((1, 800), {"low_freq": 9000.0}, "low_freq"),
        ((1, 800), {"high_freq": 9000.0}, "Nyquist"),
        ((1, 800), {"frame_length_ms": 0.05}, "frame_length_ms"),
    ],
)
def test_bad_input_raises(shape, kwargs, match):
    with pytest.raises(ValueError, match=match):
        kaldi_fbank(jnp.zeros(shape), **kwargs)


def test_module_bad_input_raises():
    with pytest.raises(ValueError, match="lengths"):
        KaldiFbank().apply({}, jnp.zeros((2, 800)), jnp.array([800]))
    with pytest.raises(ValueError, match="max_frames"):
        KaldiFbank(max_frames=-1).apply({}, jnp.zeros((1, 800)))
