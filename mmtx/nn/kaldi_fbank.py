"""Kaldi-compatible log-mel filterbank in JAX: the Audio Spectrogram Transformer's frontend.

:func:`kaldi_fbank` computes what ``torchaudio.compliance.kaldi.fbank`` computes with AST's
settings, written after transformers' numpy reimplementation of it (the path
``ASTFeatureExtractor._extract_fbank_features`` takes without torchaudio, transformers 5.24):

* ``snip_edges`` framing: frame ``t`` is samples ``[t * shift, t * shift + length)`` with
  ``length = int(sample_rate * frame_length_ms / 1000)`` (400 at 16 kHz) and
  ``shift = int(sample_rate * frame_shift_ms / 1000)`` (160); no centre padding, so
  ``frames = 1 + (S - length) // shift``. No dither. The waveform is used as given (AST feeds
  floats in [-1, 1]; no scaling to 16-bit integers).
* per frame: DC offset removal (subtract the frame's mean), pre-emphasis
  ``y[n] = x[n] - 0.97 x[n - 1]`` with ``y[0] = (1 - 0.97) x[0]``, a symmetric window
  (``"hanning"``: ``0.5 - 0.5 cos(2 pi n / (length - 1))``, numpy's ``np.hanning``), zero
  padding to the next power of two (512) and a real FFT;
* power spectrum ``|X|^2`` -> Kaldi mel filters (mel ``1127 ln(1 + f / 700)``, triangles in mel
  space between ``low_freq`` = 20 Hz and ``high_freq`` = Nyquist, no area normalisation) ->
  ``log(max(mel, mel_floor))`` with ``mel_floor`` float32's epsilon as transformers spells it.

:class:`KaldiFbank` adds AST's pad/truncate to ``max_frames`` (padding with 0.0 before the
normalisation, as the extractor's ``ZeroPad2d`` does) and ``(x - mean) / (2 * std)``.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# transformers' ASTFeatureExtractor passes this literal (float32's epsilon, 1.1920928955078125e-07,
# with one digit dropped); torchaudio uses the true epsilon. The two differ by 5e-9 relative, and
# both round to the same float32.
AST_MEL_FLOOR = 1.192092955078125e-07
# AudioSet statistics AST's feature extractor normalises with.
AST_MEAN = -4.2677393
AST_STD = 4.5689974
WINDOW_TYPES = ("hanning", "hamming", "povey", "rectangular")


def frame_geometry(
    sample_rate: int, frame_length_ms: float, frame_shift_ms: float
) -> tuple[int, int, int]:
    """``(frame_length, frame_shift, fft_length)`` in samples, as Kaldi derives them.

    ``int(sample_rate * ms * 0.001)`` for the two lengths (Kaldi truncates) and the next power of
    two of the frame length for the FFT (Kaldi's ``round_to_power_of_two``).
    """
    frame_length = int(sample_rate * frame_length_ms * 0.001)
    frame_shift = int(sample_rate * frame_shift_ms * 0.001)
    if frame_length < 2 or frame_shift < 1:
        raise ValueError(
            f"frame_length_ms={frame_length_ms} and frame_shift_ms={frame_shift_ms} at "
            f"{sample_rate} Hz give {frame_length} and {frame_shift} samples; need >= 2 and >= 1"
        )
    fft_length = 1 << (frame_length - 1).bit_length()
    return frame_length, frame_shift, fft_length


def num_frames(num_samples: int, frame_length: int, frame_shift: int) -> int:
    """Frames Kaldi's ``snip_edges=True`` framing makes of ``num_samples`` (0 if too few)."""
    if num_samples < frame_length:
        return 0
    return 1 + (num_samples - frame_length) // frame_shift


def window(frame_length: int, window_type: str = "hanning") -> np.ndarray:
    """Kaldi's analysis window, float64 ``[frame_length]`` (symmetric, as Kaldi has them).

    ``"hanning"`` ``0.5 - 0.5 cos(2 pi n / (N - 1))``; ``"hamming"`` ``0.54 - 0.46 cos(...)``;
    ``"povey"`` the Hann window to the power 0.85; ``"rectangular"`` ones.
    """
    if window_type == "hanning":
        return np.hanning(frame_length)
    if window_type == "hamming":
        return np.hamming(frame_length)
    if window_type == "povey":
        return np.power(np.hanning(frame_length), 0.85)
    if window_type == "rectangular":
        return np.ones(frame_length)
    raise ValueError(f"window_type must be one of {WINDOW_TYPES}; got {window_type!r}")


def _hz_to_kaldi_mel(hz: float | np.ndarray) -> float | np.ndarray:
    return 1127.0 * np.log(1.0 + np.asarray(hz, np.float64) / 700.0)


@functools.lru_cache(maxsize=16)
def kaldi_mel_filterbank(
    num_mel_bins: int, fft_length: int, sample_rate: int, low_freq: float, high_freq: float
) -> np.ndarray:
    """Kaldi's triangular mel filters, float64 ``[fft_length // 2 + 1, num_mel_bins]``.

    Computed as transformers' ``mel_filter_bank(..., norm=None, mel_scale="kaldi",
    triangularize_in_mel_space=True)``: ``num_mel_bins + 2`` points evenly spaced in Kaldi mel
    between ``low_freq`` and ``high_freq`` (Hz, both absolute here), FFT bin ``k`` placed at
    mel(``k * sample_rate / fft_length``), and filter ``m`` the triangle rising from point ``m``
    to ``m + 1`` and falling to ``m + 2``, linear in mel. Cached; callers must not write to it.
    """
    num_bins = fft_length // 2 + 1
    mel_points = np.linspace(
        _hz_to_kaldi_mel(low_freq), _hz_to_kaldi_mel(high_freq), num_mel_bins + 2
    )
    bin_width = sample_rate / ((num_bins - 1) * 2)
    bin_mel = _hz_to_kaldi_mel(bin_width * np.arange(num_bins))
    slopes = mel_points[None, :] - bin_mel[:, None]  # [bins, points]
    spacing = np.diff(mel_points)
    down = -slopes[:, :-2] / spacing[:-1]
    up = slopes[:, 2:] / spacing[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    filters.flags.writeable = False
    return filters


def _frequency_range(sample_rate: int, low_freq: float, high_freq: float) -> tuple[float, float]:
    """Kaldi's band edges: ``high_freq <= 0`` means Nyquist + ``high_freq``."""
    nyquist = sample_rate / 2
    high = high_freq if high_freq > 0 else nyquist + high_freq
    if not 0.0 <= low_freq < high <= nyquist:
        raise ValueError(
            f"need 0 <= low_freq < high_freq <= Nyquist ({nyquist} Hz); got low_freq={low_freq}, "
            f"high_freq={high_freq} (resolved to {high})"
        )
    return float(low_freq), float(high)


def kaldi_fbank(
    audio: jax.Array,
    *,
    sample_rate: int = 16000,
    num_mel_bins: int = 128,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    window_type: str = "hanning",
    preemphasis: float = 0.97,
    remove_dc_offset: bool = True,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
    mel_floor: float = AST_MEL_FLOOR,
) -> jax.Array:
    """Kaldi-compatible log-mel filterbank of a batch of waveforms, in float32 (jit-able).

    Equals ``torchaudio.compliance.kaldi.fbank(wave, sample_frequency=sample_rate,
    window_type="hanning", num_mel_bins=num_mel_bins)`` per clip, i.e. what transformers'
    ``ASTFeatureExtractor`` computes before padding and normalising (see the module docstring
    for the steps). ``high_freq <= 0`` means Nyquist + ``high_freq`` (Kaldi's convention).

    Args:
      audio: ``[B, S]`` float waveform (any float dtype; computed in float32), ``S`` at least one
        frame (``int(sample_rate * frame_length_ms / 1000)`` samples, 400 at 16 kHz).

    Returns:
      float32 ``[B, 1 + (S - frame_length) // frame_shift, num_mel_bins]``, natural-log mel
      energies (``log(mel_floor)`` ~ -15.94 for silence).
    """
    if audio.ndim != 2:
        raise ValueError(f"audio must be [batch, samples]; got shape {audio.shape}")
    frame_length, frame_shift, fft_length = frame_geometry(
        sample_rate, frame_length_ms, frame_shift_ms
    )
    num_samples = audio.shape[1]
    frames_count = num_frames(num_samples, frame_length, frame_shift)
    if frames_count == 0:
        raise ValueError(
            f"audio has {num_samples} samples, fewer than one frame ({frame_length} samples = "
            f"{frame_length_ms} ms at {sample_rate} Hz)"
        )
    low, high = _frequency_range(sample_rate, low_freq, high_freq)
    win = window(frame_length, window_type).astype(np.float32)
    filters = kaldi_mel_filterbank(num_mel_bins, fft_length, sample_rate, low, high)

    starts = frame_shift * np.arange(frames_count)[:, None]
    frames = audio.astype(jnp.float32)[:, starts + np.arange(frame_length)[None]]  # [B, T, L]
    if remove_dc_offset:
        frames = frames - jnp.mean(frames, axis=-1, keepdims=True)
    if preemphasis:
        frames = jnp.concatenate(
            [
                frames[..., :1] * (1.0 - preemphasis),
                frames[..., 1:] - preemphasis * frames[..., :-1],
            ],
            axis=-1,
        )
    spectrum = jnp.fft.rfft(frames * win, n=fft_length)
    power = jnp.real(spectrum) ** 2 + jnp.imag(spectrum) ** 2
    mel = jnp.einsum(
        "btk,km->btm", power, filters.astype(np.float32), precision=jax.lax.Precision.HIGHEST
    )
    return jnp.log(jnp.maximum(mel, jnp.float32(mel_floor)))


class KaldiFbank(nn.Module):
    """AST's audio frontend: :func:`kaldi_fbank`, padded/truncated and normalised (no params).

    ``audio`` float ``[B, S]`` -> float32 ``[B, max_frames, num_mel_bins]`` equal to
    transformers' ``ASTFeatureExtractor(max_length=max_frames, mean=mean, std=std)``: frames
    past ``max_frames`` are dropped, missing ones are filled with 0.0 *before* normalising
    (so they read ``-mean / (2 * std)`` ~ 0.467 with AST's defaults), then
    ``(x - mean) / (2 * std)``. ``max_frames=0`` keeps every frame (no pad, no truncation).

    ``lengths`` (optional int ``[B]``) gives each clip's own length in samples when clips of
    different lengths were zero-padded into one batch: frames that reach past a clip's end
    are replaced by the 0.0 padding, as the extractor does when it sees each clip on its own
    (snip-edges frames inside the clip never read the padded samples, so the rest is equal).
    """

    sample_rate: int = 16000
    num_mel_bins: int = 128
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    window_type: str = "hanning"
    preemphasis: float = 0.97
    remove_dc_offset: bool = True
    low_freq: float = 20.0
    high_freq: float = 0.0
    mel_floor: float = AST_MEL_FLOOR
    mean: float = AST_MEAN
    std: float = AST_STD
    max_frames: int = 1024

    def __call__(self, audio: jax.Array, lengths: jax.Array | None = None) -> jax.Array:
        """audio: float ``[B, S]`` (lengths: int ``[B]``) -> float32 ``[B, frames, mels]``."""
        if self.max_frames < 0:
            raise ValueError(f"max_frames must be >= 0 (0: keep all frames); got {self.max_frames}")
        fbank = kaldi_fbank(
            audio,
            sample_rate=self.sample_rate,
            num_mel_bins=self.num_mel_bins,
            frame_length_ms=self.frame_length_ms,
            frame_shift_ms=self.frame_shift_ms,
            window_type=self.window_type,
            preemphasis=self.preemphasis,
            remove_dc_offset=self.remove_dc_offset,
            low_freq=self.low_freq,
            high_freq=self.high_freq,
            mel_floor=self.mel_floor,
        )
        if lengths is not None:
            if lengths.shape != audio.shape[:1]:
                raise ValueError(
                    f"lengths must be [batch] = {audio.shape[:1]}; got shape {lengths.shape}"
                )
            frame_length, frame_shift, _ = frame_geometry(
                self.sample_rate, self.frame_length_ms, self.frame_shift_ms
            )
            frame_ends = frame_shift * jnp.arange(fbank.shape[1]) + frame_length  # [T]
            valid = frame_ends[None, :] <= jnp.asarray(lengths)[:, None]  # [B, T]
            fbank = jnp.where(valid[..., None], fbank, 0.0)
        if self.max_frames:
            fbank = fbank[:, : self.max_frames]
            missing = self.max_frames - fbank.shape[1]
            if missing > 0:
                fbank = jnp.pad(fbank, ((0, 0), (0, missing), (0, 0)))
        return (fbank - self.mean) / (2.0 * self.std)
