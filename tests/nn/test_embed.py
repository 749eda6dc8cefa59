"""Tests for :mod:`mmtx.nn.embed`: patch/token/position embeddings and the log-mel frontend.

Each piece is compared with a direct reference written here: patches cut out with reshapes and
multiplied by the flattened kernel, position tables filled in by explicit loops over the
formula, and a log-mel spectrogram computed frame by frame with ``numpy``.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmtx.nn import (
    LearnedPositionEmbedding,
    LogMelSpectrogram,
    PatchEmbed,
    TokenEmbed,
    TubeletEmbed,
    log_mel_spectrogram,
    mel_filterbank,
    sincos_1d,
    sincos_2d,
)
from mmtx.nn.embed import grid_tokens, project_to_tokens

HIGHEST = jax.lax.Precision.HIGHEST


def _normal(shape: tuple[int, ...], seed: int, scale: float = 1.0) -> jnp.ndarray:
    return jnp.asarray(scale * np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _params(module: nn.Module, *args) -> dict:
    """Random params of the module's shapes (``eval_shape`` of init: nothing is compiled)."""
    shapes = nn.unbox(jax.eval_shape(module.init, jax.random.key(0), *args)["params"])
    rng = np.random.default_rng(100)
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(size=s.shape), s.dtype), shapes)


# ----------------------------------------------------------------------------- patches


def ref_patch_embed(params: dict, x: jnp.ndarray, patch: tuple[int, int]) -> jnp.ndarray:
    """Cut ``x`` into whole patches (row-major), flatten each, multiply by the kernel."""
    b, h, w, c = x.shape
    ph, pw = patch
    gh, gw = h // ph, w // pw
    x = x[:, : gh * ph, : gw * pw]
    patches = x.reshape(b, gh, ph, gw, pw, c).transpose(0, 1, 3, 2, 4, 5)
    patches = patches.reshape(b, gh * gw, ph * pw * c)
    kernel = params["projection"]["kernel"]  # [ph, pw, c, features]
    return (
        jnp.dot(patches, kernel.reshape(ph * pw * c, -1), precision=HIGHEST)
        + params["projection"]["bias"]
    )


def test_patch_embed_matches_reference() -> None:
    patch = (4, 3)
    module = PatchEmbed(features=5, patch_size=patch)
    x = _normal((2, 10, 13, 3), seed=0)  # 2 rows and 1 column do not fill a whole patch
    params = _params(module, x)
    cot = _normal((2, 2 * 4, 5), seed=1)

    @jax.jit
    def run(params, x):
        def lib(p, x):
            y, grid = module.apply({"params": p}, x)
            assert grid == (2, 4)
            return jnp.sum(y * cot), y

        def ref(p, x):
            y = ref_patch_embed(p, x, patch)
            return jnp.sum(y * cot), y

        return jax.grad(lib, (0, 1), has_aux=True)(params, x), jax.grad(ref, (0, 1), has_aux=True)(
            params, x
        )

    ((p_grad, x_grad), out), ((ref_p_grad, ref_x_grad), ref) = run(params, x)
    assert out.shape == (2, 8, 5)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-4)
    np.testing.assert_allclose(np.asarray(x_grad), np.asarray(ref_x_grad), atol=1e-5)
    for name in ("kernel", "bias"):
        np.testing.assert_allclose(
            np.asarray(p_grad["projection"][name]),
            np.asarray(ref_p_grad["projection"][name]),
            atol=1e-4,
            rtol=1e-5,
        )
    x_grad = np.asarray(x_grad)
    assert np.all(x_grad[:, 8:] == 0) and np.all(x_grad[:, :, 12:] == 0)  # dropped pixels
    assert np.abs(x_grad[:, :8, :12]).min() > 0


def ref_strided_patch_embed(params, x, patch, strides) -> np.ndarray:
    """Every (possibly overlapping) patch cut out by explicit loops, row-major, times the
    flattened kernel (float64 numpy)."""
    x = np.asarray(x, np.float64)
    (ph, pw), (sh, sw) = patch, strides
    gh, gw = (x.shape[1] - ph) // sh + 1, (x.shape[2] - pw) // sw + 1
    patches = [
        x[:, i * sh : i * sh + ph, j * sw : j * sw + pw].reshape(x.shape[0], -1)
        for i in range(gh)
        for j in range(gw)
    ]
    kernel = np.asarray(params["projection"]["kernel"], np.float64)
    out = np.stack(patches, axis=1) @ kernel.reshape(-1, kernel.shape[-1])
    if "bias" in params["projection"]:
        out = out + np.asarray(params["projection"]["bias"], np.float64)
    return out


@pytest.mark.parametrize(
    "patch,strides,use_bias",
    [((4, 3), (2, 3), True), ((5, 5), (3, 2), False), ((4, 3), None, True)],
)
def test_strided_patch_embed_matches_explicit_patches(patch, strides, use_bias) -> None:
    module = PatchEmbed(features=5, patch_size=patch, strides=strides, use_bias=use_bias)
    x = _normal((2, 11, 13, 2), seed=0)
    params = _params(module, x)
    assert ("bias" in params["projection"]) == use_bias
    y, grid = jax.jit(module.apply)({"params": params}, x)
    sh, sw = strides or patch
    assert grid == ((11 - patch[0]) // sh + 1, (13 - patch[1]) // sw + 1)
    want = ref_strided_patch_embed(params, x, patch, strides or patch)
    assert y.shape == want.shape == (2, grid[0] * grid[1], 5)
    np.testing.assert_allclose(np.asarray(y), want, atol=1e-4)


def test_patch_embed_rejects_a_zero_stride() -> None:
    module = PatchEmbed(features=5, patch_size=(2, 2), strides=(0, 2))
    with pytest.raises(ValueError, match="strides"):
        jax.eval_shape(module.init, jax.random.key(0), jnp.ones((1, 4, 4, 1)))


# ----------------------------------------------------------------------------- tokens, positions


def test_token_embed() -> None:
    module = TokenEmbed(vocab_size=11, features=4, dtype=jnp.bfloat16)
    tokens = jnp.asarray([[1, 5, 5, 0], [10, 1, 1, 1]], jnp.int32)
    params = _params(module, tokens)
    table = np.asarray(params["embedding"]["embedding"])
    assert table.shape == (11, 4) and table.dtype == np.float32
    cot = np.asarray(_normal((2, 4, 4), seed=3))

    @jax.jit
    def run(params):
        fn = lambda p: module.apply({"params": p}, tokens)
        y, vjp = jax.vjp(fn, params)
        return y, vjp(jnp.asarray(cot, y.dtype))[0]

    out, grads = run(params)
    assert out.dtype == jnp.bfloat16 and out.shape == (2, 4, 4)
    np.testing.assert_allclose(np.asarray(out, np.float32), table[np.asarray(tokens)], rtol=1e-2)
    want = np.zeros_like(table)
    np.add.at(want, np.asarray(tokens), cot)
    grad = np.asarray(grads["embedding"]["embedding"], np.float32)
    np.testing.assert_allclose(grad, want, atol=5e-2, rtol=1e-2)
    assert np.all(grad[[2, 3, 4, 6, 7, 8, 9]] == 0)  # unused ids get no gradient


def test_learned_position_embedding() -> None:
    module = LearnedPositionEmbedding(max_length=6)
    x = _normal((2, 4, 3), seed=0)
    params = _params(module, x)
    table = np.asarray(params["embedding"])
    assert table.shape == (6, 3)

    @jax.jit
    def run(params, x):
        y, vjp = jax.vjp(lambda p, x: module.apply({"params": p}, x), params, x)
        return y, vjp(jnp.ones_like(y))

    out, (p_grad, x_grad) = run(params, x)
    np.testing.assert_allclose(np.asarray(out), np.asarray(x) + table[None, :4], atol=1e-6)
    np.testing.assert_allclose(np.asarray(p_grad["embedding"])[:4], 2.0)  # summed over batch
    np.testing.assert_allclose(np.asarray(p_grad["embedding"])[4:], 0.0)
    np.testing.assert_allclose(np.asarray(x_grad), 1.0)

    jax.eval_shape(module.apply, {"params": params}, jnp.zeros((2, 6, 3)))  # T == max_length
    with pytest.raises(ValueError, match="max_length"):
        jax.eval_shape(module.apply, {"params": params}, jnp.zeros((2, 7, 3)))


def test_sincos_1d_matches_formula() -> None:
    length, width, temperature = 7, 6, 10_000.0
    want = np.zeros((length, width))
    for pos in range(length):
        for i in range(width // 2):
            angle = pos / temperature ** (i / (width // 2))
            want[pos, i] = np.sin(angle)
            want[pos, width // 2 + i] = np.cos(angle)
    got = sincos_1d(length, width)
    assert got.shape == (length, width) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(sincos_1d(3, 4, temperature=100.0)[2, 1], np.sin(2 / 10), atol=1e-6)
    with pytest.raises(ValueError, match="even"):
        sincos_1d(4, 5)


def test_sincos_2d_matches_formula() -> None:
    height, width, features = 3, 4, 8  # not square: rows and columns cannot be confused
    quarter = features // 4
    want = np.zeros((height * width, features))
    for row in range(height):
        for col in range(width):
            for i in range(quarter):
                omega = 1.0 / 10_000.0 ** (i / quarter)
                token = row * width + col  # row-major, like the patch order of PatchEmbed
                want[token, i] = np.sin(col * omega)
                want[token, quarter + i] = np.cos(col * omega)
                want[token, 2 * quarter + i] = np.sin(row * omega)
                want[token, 3 * quarter + i] = np.cos(row * omega)
    got = sincos_2d(height, width, features)
    assert got.shape == (height * width, features) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-6)
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d(2, 2, 6)


# ----------------------------------------------------------------------------- log-mel


def _hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)


def _mel_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, np.float64) / 2595.0) - 1.0)


def _mel_centers_hz(num_mel_bins: int, fmin: float, fmax: float) -> np.ndarray:
    return _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), num_mel_bins + 2))


def ref_mel_filterbank(num_mel_bins, fft_length, sample_rate, fmin, fmax) -> np.ndarray:
    """HTK triangles evaluated bin by bin."""
    edges = _mel_centers_hz(num_mel_bins, fmin, fmax)
    num_bins = fft_length // 2 + 1
    out = np.zeros((num_bins, num_mel_bins))
    for k in range(num_bins):
        f = k * sample_rate / fft_length
        for m in range(num_mel_bins):
            lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
            if lo < f <= mid:
                out[k, m] = (f - lo) / (mid - lo)
            elif mid < f < hi:
                out[k, m] = (hi - f) / (hi - mid)
    return out


def ref_log_mel(audio: np.ndarray, sr, window, hop, bins, fmin, fmax, floor=1e-6) -> np.ndarray:
    """Frame loop, periodic Hann, zero-padded rfft, power, filterbank, log(max(., floor))."""
    audio = np.asarray(audio, np.float64)
    n_fft = 1
    while n_fft < window:
        n_fft *= 2
    hann = np.array([0.5 - 0.5 * np.cos(2 * np.pi * n / window) for n in range(window)])
    filters = ref_mel_filterbank(bins, n_fft, sr, fmin, fmax)
    num_frames = 1 + (audio.shape[1] - window) // hop
    out = np.zeros((audio.shape[0], num_frames, bins))
    for b in range(audio.shape[0]):
        for t in range(num_frames):
            frame = audio[b, t * hop : t * hop + window] * hann
            power = np.abs(np.fft.rfft(frame, n=n_fft)) ** 2
            out[b, t] = np.log(np.maximum(power @ filters, floor))
    return out


def test_mel_filterbank() -> None:
    fb = mel_filterbank(16, 512, 16000, 50.0, 8000.0)
    assert fb.shape == (257, 16) and fb.dtype == np.float32
    np.testing.assert_allclose(fb, ref_mel_filterbank(16, 512, 16000, 50.0, 8000.0), atol=1e-6)
    assert fb.min() >= 0.0 and fb.max() <= 1.0 + 1e-6
    assert np.all(fb.max(axis=0) > 0.5)  # every filter sees some FFT bin

    # With a fine frequency grid each triangle peaks at (almost exactly) 1, at its centre.
    fine = mel_filterbank(10, 8192, 16000, 0.0, 8000.0)
    np.testing.assert_allclose(fine.max(axis=0), 1.0, atol=0.01)
    centers = _mel_centers_hz(10, 0.0, 8000.0)[1:-1]
    peak_hz = fine.argmax(axis=0) * 16000 / 8192
    np.testing.assert_allclose(peak_hz, centers, atol=16000 / 8192)
    # Triangles are zero outside their two neighbouring centres.
    edges = _mel_centers_hz(10, 0.0, 8000.0)
    freqs = np.arange(fine.shape[0]) * 16000 / 8192
    for m in range(10):
        outside = (freqs <= edges[m]) | (freqs >= edges[m + 2])
        assert np.all(fine[outside, m] == 0)


LOG_MEL_KWARGS = dict(
    sample_rate=16000,
    window_length=400,
    hop_length=160,
    num_mel_bins=24,
    min_frequency=50.0,
    max_frequency=8000.0,
)


@functools.lru_cache
def _log_mel_fn(**kwargs):
    return jax.jit(functools.partial(log_mel_spectrogram, **kwargs))


@pytest.mark.parametrize(
    "kwargs",
    [
        LOG_MEL_KWARGS,
        # A window of a power-of-two length (FFT of the same size), another range of frequencies.
        dict(
            sample_rate=8000,
            window_length=256,
            hop_length=100,
            num_mel_bins=12,
            min_frequency=100.0,
            max_frequency=3000.0,
        ),
    ],
)
def test_log_mel_matches_numpy_reference(kwargs: dict) -> None:
    audio = np.random.default_rng(0).normal(size=(2, 1234)) * 0.1
    audio[1, :600] = 0.0  # silent frames hit the floor
    got = np.asarray(_log_mel_fn(**kwargs)(jnp.asarray(audio, jnp.float32)))
    frames = 1 + (1234 - kwargs["window_length"]) // kwargs["hop_length"]
    assert got.shape == (2, frames, kwargs["num_mel_bins"]) and got.dtype == np.float32
    ref = ref_log_mel(audio.astype(np.float32), *kwargs.values())
    np.testing.assert_allclose(got, ref, atol=2e-3, rtol=1e-4)
    np.testing.assert_allclose(got[1, 0], np.log(1e-6), rtol=1e-6)


def test_pure_tone_peaks_at_its_mel_bin() -> None:
    sr, bins = 16000, LOG_MEL_KWARGS["num_mel_bins"]
    centers = _mel_centers_hz(bins, 50.0, 8000.0)[1:-1]
    fn = _log_mel_fn(**LOG_MEL_KWARGS)
    t = np.arange(1234) / sr
    for target in (5, 12, 19):
        tone = np.sin(2 * np.pi * centers[target] * t)[None].astype(np.float32)
        log_mel = np.asarray(fn(jnp.asarray(tone)))
        assert np.all(log_mel.argmax(axis=-1) == target), (target, log_mel.argmax(-1))


def test_log_mel_spectrogram_module_normalises() -> None:
    module = LogMelSpectrogram(**LOG_MEL_KWARGS, mean=-2.0, std=3.0)
    audio = _normal((2, 1234), seed=0, scale=0.1)
    assert jax.eval_shape(module.init, jax.random.key(0), audio) == {}
    out = jax.jit(module.apply)({}, audio)
    raw = _log_mel_fn(**LOG_MEL_KWARGS)(audio)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out), (np.asarray(raw) + 2.0) / 3.0, atol=1e-5)


def test_log_mel_gradient_is_finite() -> None:
    fn = _log_mel_fn(**LOG_MEL_KWARGS)
    grad = jax.jit(jax.grad(lambda a: jnp.sum(fn(a))))
    noise = _normal((2, 1234), seed=0, scale=0.1)
    g = np.asarray(grad(noise))
    assert np.isfinite(g).all() and np.abs(g).max() > 0
    g_silence = np.asarray(grad(jnp.zeros((2, 1234))))  # every mel value hits the floor
    assert np.isfinite(g_silence).all()


def test_log_mel_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="batch, samples"):
        log_mel_spectrogram(jnp.zeros((1234,)))
    with pytest.raises(ValueError, match="fewer than one window"):
        log_mel_spectrogram(jnp.zeros((2, 100)), window_length=400)


# ----------------------------------------------------------------------------- tubelets


def ref_tubelet_embed(params: dict, x, tubelet: tuple[int, int, int]):
    """Explicit loops (float64 numpy): every ``t x ph x pw`` tubelet in time-major, then
    row-major order, flattened (time, row, column, channel), times the flattened kernel plus
    the bias. Returns ``(y, patches)``: ``y`` ``[B, N, F]`` and the flattened tubelets
    ``[B, N, t * ph * pw * C]``."""
    x = np.asarray(x, np.float64)
    t, ph, pw = tubelet
    b, frames, height, width, _ = x.shape
    patches = np.stack(
        [
            x[:, i * t : (i + 1) * t, j * ph : (j + 1) * ph, k * pw : (k + 1) * pw].reshape(b, -1)
            for i in range(frames // t)
            for j in range(height // ph)
            for k in range(width // pw)
        ],
        axis=1,
    )
    kernel = np.asarray(params["projection"]["kernel"], np.float64)
    y = patches @ kernel.reshape(-1, kernel.shape[-1])
    if "bias" in params["projection"]:
        y = y + np.asarray(params["projection"]["bias"], np.float64)
    return y, patches


def ref_tubelet_embed_grads(params: dict, x, tubelet, cot) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of ``sum(y * cot)`` by hand: the kernel's is ``patches^T @ cot`` (summed over
    examples and tokens); the input's puts ``cot @ kernel^T`` back at each tubelet's pixels."""
    _, patches = ref_tubelet_embed(params, x, tubelet)
    cot = np.asarray(cot, np.float64)
    kernel = np.asarray(params["projection"]["kernel"], np.float64)
    kernel_grad = np.einsum("bnk,bnf->kf", patches, cot).reshape(kernel.shape)
    per_patch = cot @ kernel.reshape(-1, kernel.shape[-1]).T  # [B, N, t * ph * pw * C]
    t, ph, pw = tubelet
    b, frames, height, width, channels = x.shape
    x_grad = np.zeros(x.shape)
    n = 0
    for i in range(frames // t):
        for j in range(height // ph):
            for k in range(width // pw):
                block = per_patch[:, n].reshape(b, t, ph, pw, channels)
                x_grad[:, i * t : (i + 1) * t, j * ph : (j + 1) * ph, k * pw : (k + 1) * pw] = block
                n += 1
    return kernel_grad, x_grad


@pytest.mark.parametrize("use_bias", [True, False])
def test_tubelet_embed_matches_explicit_tubelets(use_bias: bool) -> None:
    tubelet = (2, 3, 2)  # all three sizes differ: time, rows and columns cannot be confused
    module = TubeletEmbed(features=5, tubelet_size=tubelet, use_bias=use_bias)
    x = _normal((2, 4, 6, 8, 3), seed=0)
    params = _params(module, x)
    assert params["projection"]["kernel"].shape == (2, 3, 2, 3, 5)
    assert ("bias" in params["projection"]) == use_bias
    grid = (2, 2, 4)
    cot = _normal((2, 16, 5), seed=1)

    @jax.jit
    def run(params, x):
        def loss(p, x):
            y, _ = module.apply({"params": p}, x)
            return jnp.sum(y * cot), y

        return jax.grad(loss, (0, 1), has_aux=True)(params, x)

    assert module.apply({"params": params}, x)[1] == grid
    (p_grad, x_grad), y = run(params, x)
    want, _ = ref_tubelet_embed(params, x, tubelet)
    assert y.shape == want.shape == (2, 16, 5) and y.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(y), want, atol=1e-4)
    kernel_grad, want_x_grad = ref_tubelet_embed_grads(params, x, tubelet, cot)
    np.testing.assert_allclose(np.asarray(p_grad["projection"]["kernel"]), kernel_grad, atol=1e-4)
    np.testing.assert_allclose(np.asarray(x_grad), want_x_grad, atol=1e-4)
    if use_bias:
        np.testing.assert_allclose(
            np.asarray(p_grad["projection"]["bias"]), np.asarray(cot).sum((0, 1)), atol=1e-4
        )


def test_tubelet_embed_bf16_compute_f32_params() -> None:
    module = TubeletEmbed(features=4, tubelet_size=(2, 2, 2), dtype=jnp.bfloat16)
    x = _normal((1, 2, 4, 4, 1), seed=2)
    params = _params(module, x)
    assert params["projection"]["kernel"].dtype == jnp.float32
    y, grid = module.apply({"params": params}, x)
    assert y.dtype == jnp.bfloat16 and y.shape == (1, 4, 4) and grid == (1, 2, 2)
    want, _ = ref_tubelet_embed(params, x, (2, 2, 2))
    np.testing.assert_allclose(np.asarray(y, np.float32), want, atol=0.1, rtol=0.05)


@pytest.mark.parametrize(
    "shape,match",
    [
        ((1, 3, 4, 4, 1), "frames 3 is not divisible by the tubelet size 2"),
        ((1, 4, 5, 4, 1), "height 5 is not divisible"),
        ((1, 4, 4, 6, 1), "width 6 is not divisible by the tubelet size 4"),
        ((1, 4, 4, 1), r"\[B, T, H, W, C\]"),
    ],
)
def test_tubelet_embed_rejects_indivisible_or_wrong_rank(shape, match) -> None:
    module = TubeletEmbed(features=3, tubelet_size=(2, 2, 4))
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(module.init, jax.random.key(0), jnp.zeros(shape))


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (2, 2, 3, 4, 5), (2, 0, 3, 5)])
def test_grid_tokens_flattens_the_grid_row_major(shape) -> None:
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    tokens, grid = grid_tokens(jnp.asarray(x))
    assert grid == shape[1:-1]
    # Reference: token n is the grid cell whose row-major index is n.
    want = np.zeros((shape[0], int(np.prod(grid)), shape[-1]), np.float32)
    for n, cell in enumerate(np.ndindex(*grid)):
        want[:, n] = x[(slice(None), *cell)]
    np.testing.assert_array_equal(np.asarray(tokens), want)


class _Projected(nn.Module):
    """project_to_tokens with a 2 x 2 patch conv or a Dense."""

    features: int
    conv: bool
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, tuple[int, ...]]:
        if self.conv:
            window = dict(kernel_size=(2, 2), strides=(2, 2), padding="VALID", use_bias=True)
            return project_to_tokens(self, nn.Conv, x, **window)
        return project_to_tokens(self, nn.Dense, x)


class _WrittenOut(nn.Module):
    """The same projection written out: the layer with its initialisers, then a reshape."""

    features: int
    conv: bool

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, tuple[int, ...]]:
        axes = (None, None, None, "embed") if self.conv else (None, "embed")
        inits = dict(
            kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), axes),
            bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
            name="projection",
        )
        if self.conv:
            x = nn.Conv(self.features, (2, 2), strides=(2, 2), padding="VALID", **inits)(x)
        else:
            x = nn.Dense(self.features, **inits)(x)
        batch, gh, gw, features = x.shape
        return x.reshape(batch, gh * gw, features), (gh, gw)


@pytest.mark.parametrize("conv", [True, False])
def test_project_to_tokens_is_the_written_out_projection(conv) -> None:
    x = _normal((2, 4, 6, 3), seed=1)
    module, reference = _Projected(8, conv), _WrittenOut(8, conv)
    boxed, boxed_ref = module.init(jax.random.key(0), x), reference.init(jax.random.key(0), x)
    assert nn.get_partition_spec(boxed) == nn.get_partition_spec(boxed_ref)
    params = nn.unbox(boxed)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(nn.unbox(boxed_ref)), strict=True):
        np.testing.assert_array_equal(a, b)
    (tokens, grid), (want, want_grid) = module.apply(params, x), reference.apply(params, x)
    assert grid == want_grid == ((2, 3) if conv else (4, 6))
    np.testing.assert_array_equal(tokens, want)
    grad = jax.grad(lambda p: jnp.sum(jnp.sin(module.apply(p, x)[0])))(params)
    grad_ref = jax.grad(lambda p: jnp.sum(jnp.sin(reference.apply(p, x)[0])))(params)
    for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(grad_ref), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
