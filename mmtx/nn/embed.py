"""Embeddings and frontends: patches, tokens, positions, and a log-mel spectrogram in JAX."""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmtx.nn.options import options
from mmtx.nn.params import logical_param

Dtype = Any


def grid_tokens(x: jax.Array) -> tuple[jax.Array, tuple[int, ...]]:
    """A grid of features ``[B, *grid, F]`` -> (tokens ``[B, prod(grid), F]`` in ``x``'s
    dtype, row-major over the grid (the last grid axis fastest), and ``grid``)."""
    grid = tuple(x.shape[1:-1])
    return x.reshape(x.shape[0], math.prod(grid), x.shape[-1]), grid


def project_to_tokens(
    module: nn.Module, layer: type[nn.Module], x: jax.Array, **layer_options: Any
) -> tuple[jax.Array, tuple[int, ...]]:
    """The last layer of the pixel stems (:class:`PatchEmbed`, :class:`TubeletEmbed`,
    :class:`ConvStem`): ``module``'s ``projection``, a ``layer`` (``nn.Conv`` or ``nn.Dense``,
    with ``layer_options``) to ``module.features`` in ``module.dtype`` / ``module.param_dtype``,
    LeCun-normal kernel (its output axis named ``embed``) and zero bias ``[features]``
    (``embed``), over ``x`` ``[B, *grid_in, C]``, then :func:`grid_tokens`:
    (``[B, prod(grid), features]`` in ``dtype``, ``grid``). Call it from ``module``'s compact
    ``__call__``."""
    # Conv's kernel is [*window, C, F]; Dense's [C, F].
    kernel_rank = 2 + len(layer_options.get("kernel_size", ()))
    kernel_axes = (None,) * (kernel_rank - 1) + ("embed",)
    x = layer(
        module.features,
        **layer_options,
        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), kernel_axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
        dtype=module.dtype,
        param_dtype=module.param_dtype,
        name="projection",
    )(x)
    return grid_tokens(x)


class PatchEmbed(nn.Module):
    """Splits an image into patches and projects each to ``features``.

    A strided convolution, as in ViT: ``[B, H, W, C] -> [B, gh * gw, features]`` with
    ``gh = (H - ph) // sh + 1`` (and so for ``gw``), patches flattened row-major. ``strides``
    ``(sh, sw)`` default to the patch size (non-overlapping patches; trailing rows/columns
    that do not fill a whole patch are dropped); smaller strides overlap them (AST).
    ``use_bias=False`` drops the projection's bias (``projection/bias``).
    """

    features: int
    patch_size: tuple[int, int]
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    strides: tuple[int, int] | None = None
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, tuple[int, int]]:
        """x: ``[B, H, W, C]`` float -> (``[B, N, features]``, patch grid ``(gh, gw)``)."""
        strides = tuple(self.patch_size) if self.strides is None else tuple(self.strides)
        if min(strides) < 1:
            raise ValueError(f"patch strides must be >= 1; got {strides}")
        return project_to_tokens(
            self,
            nn.Conv,
            x,
            kernel_size=tuple(self.patch_size),
            strides=strides,
            padding="VALID",
            use_bias=self.use_bias,
        )


class TubeletEmbed(nn.Module):
    """Splits a video into non-overlapping tubelets and projects each to ``features``.

    ViViT's tubelet embedding (Arnab et al. 2021): a 3-D convolution whose kernel and stride are
    ``tubelet_size`` ``(t, ph, pw)``, i.e. each ``t x ph x pw x C`` block of pixels, flattened
    (time, row, column, channel) like the kernel ``projection/kernel`` ``[t, ph, pw, C,
    features]``, times that kernel plus ``projection/bias`` ``[features]`` (none with
    ``use_bias=False``). ``[B, T, H, W, C] -> [B, gt * gh * gw, features]`` in ``dtype`` with
    ``gt = T / t``, ``gh = H / ph``, ``gw = W / pw``; tokens are time-major, then row-major
    (token ``(i * gh + j) * gw + k`` is tubelet ``(i, j, k)``). Each of ``T``, ``H``, ``W``
    must be divisible by its tubelet size (``ValueError`` otherwise).
    """

    features: int
    tubelet_size: tuple[int, int, int]
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, tuple[int, int, int]]:
        """x: ``[B, T, H, W, C]`` float -> (``[B, N, features]``, grid ``(gt, gh, gw)``)."""
        size = tuple(self.tubelet_size)
        if x.ndim != 5:
            raise ValueError(f"TubeletEmbed takes video [B, T, H, W, C]; got shape {x.shape}")
        if len(size) != 3 or min(size) < 1:
            raise ValueError(f"tubelet_size must be 3 positive ints (t, h, w); got {size}")
        for axis, name, step in zip((1, 2, 3), ("frames", "height", "width"), size, strict=True):
            if x.shape[axis] % step:
                raise ValueError(
                    f"video {name} {x.shape[axis]} is not divisible by the tubelet size {step} "
                    f"(tubelet_size {size}, video shape {tuple(x.shape)})"
                )
        return project_to_tokens(
            self,
            nn.Conv,
            x,
            kernel_size=size,
            strides=size,
            padding="VALID",
            use_bias=self.use_bias,
        )


class ConvStem(nn.Module):
    """Convolutional stem for a ViT (Xiao et al. 2021, "Early convolutions help transformers
    see better"): 3x3 stride-2 convolutions, each doubling the channels, then a 1x1 projection.

    ``[B, H, W, C] -> [B, H/2^n * W/2^n, features]`` for ``n = num_layers``; it sees local
    shape much better than a single linear patch projection, for a small cost.
    """

    features: int
    num_layers: int = 3
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, tuple[int, int]]:
        """x: ``[B, H, W, C]`` float -> (``[B, N, features]``, patch grid ``(gh, gw)``)."""
        for i in range(self.num_layers):
            channels = max(self.features // 2 ** (self.num_layers - 1 - i), 8)
            x = nn.Conv(
                channels,
                kernel_size=(3, 3),
                strides=(2, 2),
                padding="SAME",
                kernel_init=nn.with_logical_partitioning(
                    nn.initializers.lecun_normal(), (None, None, None, None)
                ),
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"conv_{i}",
            )(x)
            x = nn.gelu(x)
        return project_to_tokens(self, nn.Dense, x)


class TokenEmbed(nn.Module):
    """Token id lookup: int ``[B, T] -> [B, T, features]``."""

    vocab_size: int
    features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        """tokens: int32 ``[B, T]`` in ``[0, vocab_size)`` -> ``[B, T, features]`` in ``dtype``."""
        return nn.Embed(
            self.vocab_size,
            self.features,
            embedding_init=nn.with_logical_partitioning(
                nn.initializers.normal(stddev=0.02), ("vocab", "embed")
            ),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="embedding",
        )(tokens)


class LearnedPositionEmbedding(nn.Module):
    """Adds a learned ``[max_length, D]`` table to the first ``T`` positions of ``[B, T, D]``."""

    max_length: int
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: ``[B, T, D]`` with ``T <= max_length`` -> ``[B, T, D]``."""
        length, width = x.shape[1], x.shape[2]
        if length > self.max_length:
            raise ValueError(f"sequence length {length} exceeds max_length {self.max_length}")
        table = logical_param(
            self,
            "embedding",
            nn.initializers.normal(stddev=0.02),
            ("length", "embed"),
            (self.max_length, width),
        )
        return x + table[None, :length].astype(x.dtype)


def sincos_1d(length: int, width: int, temperature: float = 10_000.0) -> np.ndarray:
    """Fixed sine-cosine position table, float32 ``[length, width]`` (width even)."""
    if width % 2:
        raise ValueError(f"sincos_1d needs an even width, got {width}")
    omega = 1.0 / temperature ** (np.arange(width // 2, dtype=np.float64) / (width // 2))
    angles = np.arange(length, dtype=np.float64)[:, None] * omega[None]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)


def sincos_2d(height: int, width: int, features: int, temperature: float = 10_000.0) -> np.ndarray:
    """2-D sine-cosine table for a ``height x width`` grid, float32 ``[height * width, features]``.

    Half the features encode the row and half the column (``features`` divisible by 4),
    as in MoCo v3 / big_vision ``posemb_sincos_2d``.
    """
    if features % 4:
        raise ValueError(f"sincos_2d needs features divisible by 4, got {features}")
    rows = np.repeat(np.arange(height), width)
    cols = np.tile(np.arange(width), height)
    quarter = features // 4
    omega = 1.0 / temperature ** (np.arange(quarter, dtype=np.float64) / quarter)
    row_angles = rows[:, None] * omega[None]
    col_angles = cols[:, None] * omega[None]
    table = np.concatenate(
        [np.sin(col_angles), np.cos(col_angles), np.sin(row_angles), np.cos(row_angles)], axis=1
    )
    return table.astype(np.float32)


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@functools.lru_cache(maxsize=16)
def mel_filterbank(
    num_mel_bins: int, fft_length: int, sample_rate: int, min_frequency: float, max_frequency: float
) -> np.ndarray:
    """Triangular HTK-mel filters, float32 ``[fft_length // 2 + 1, num_mel_bins]``.

    Filter ``m`` rises linearly from mel point ``m`` to ``m + 1`` and falls to ``m + 2``, with
    ``num_mel_bins + 2`` points evenly spaced on the mel scale between the two frequencies.
    """
    fft_hz = np.linspace(0.0, sample_rate / 2, fft_length // 2 + 1)
    edges_hz = _mel_to_hz(
        np.linspace(_hz_to_mel(min_frequency), _hz_to_mel(max_frequency), num_mel_bins + 2)
    )
    lower, center, upper = edges_hz[:-2], edges_hz[1:-1], edges_hz[2:]
    rising = (fft_hz[:, None] - lower[None]) / (center - lower)[None]
    falling = (upper[None] - fft_hz[:, None]) / (upper - center)[None]
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def log_mel_spectrogram(
    audio: jax.Array,
    *,
    sample_rate: int = 16000,
    window_length: int = 400,
    hop_length: int = 160,
    num_mel_bins: int = 64,
    min_frequency: float = 50.0,
    max_frequency: float = 8000.0,
    floor: float = 1e-6,
) -> jax.Array:
    """Log-mel spectrogram of a waveform, computed in float32.

    Frames of ``window_length`` samples every ``hop_length`` (no centre padding) get a
    periodic Hann window and an FFT of the next power of two; the power spectrum goes through
    :func:`mel_filterbank` and ``log(max(mel, floor))``.

    Args:
      audio: ``[B, S]`` float waveform, ``S >= window_length``.

    Returns:
      float32 ``[B, 1 + (S - window_length) // hop_length, num_mel_bins]``.
    """
    if audio.ndim != 2:
        raise ValueError(f"audio must be [batch, samples]; got shape {audio.shape}")
    num_samples = audio.shape[1]
    if num_samples < window_length:
        raise ValueError(
            f"audio has {num_samples} samples, fewer than one window ({window_length})"
        )
    fft_length = 1 << (window_length - 1).bit_length()
    num_frames = 1 + (num_samples - window_length) // hop_length
    starts = hop_length * np.arange(num_frames)[:, None]
    frames = audio.astype(jnp.float32)[:, starts + np.arange(window_length)[None]]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(window_length) / window_length)
    spectrum = jnp.fft.rfft(frames * window.astype(np.float32), n=fft_length)
    power = jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2
    filters = mel_filterbank(num_mel_bins, fft_length, sample_rate, min_frequency, max_frequency)
    mel = jnp.einsum("bfk,km->bfm", power, filters, precision=jax.lax.Precision.HIGHEST)
    return jnp.log(jnp.maximum(mel, floor))


class SpectrogramOptions(nn.Module, kw_only=True):
    """The options of :func:`log_mel_spectrogram`, declared here once (keyword-only).

    :class:`LogMelSpectrogram` and :class:`mmtx.encoders.AudioEncoder` are these options (the
    encoder's ``config.model.audio`` fields of the same names) and hand them on whole with
    :func:`mmtx.nn.options.options`.

    Attributes:
      sample_rate: the waveform's rate in Hz.
      window_length: samples in one STFT frame.
      hop_length: samples between the starts of two frames.
      num_mel_bins: mel filters, the spectrogram's last axis.
      min_frequency: the lowest mel filter edge in Hz.
      max_frequency: the highest mel filter edge in Hz.
    """

    sample_rate: int = 16000
    window_length: int = 400
    hop_length: int = 160
    num_mel_bins: int = 64
    min_frequency: float = 50.0
    max_frequency: float = 8000.0


class LogMelSpectrogram(SpectrogramOptions):
    """Parameter-free module form of :func:`log_mel_spectrogram`, normalised.

    ``[B, S]`` float waveform -> float32 ``[B, frames, num_mel_bins]`` equal to
    ``(log_mel - mean) / std``. The spectrogram's options (:class:`SpectrogramOptions`) are
    keyword-only.
    """

    mean: float = 0.0
    std: float = 1.0

    def __call__(self, audio: jax.Array) -> jax.Array:
        """audio: ``[B, S]`` float -> float32 ``[B, frames, num_mel_bins]``."""
        log_mel = log_mel_spectrogram(audio, **options(self, SpectrogramOptions))
        return (log_mel - self.mean) / self.std
