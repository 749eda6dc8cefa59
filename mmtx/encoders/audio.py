"""Audio encoder: AST-style (Gong et al. 2021) log-mel -> patches -> transformer."""

from __future__ import annotations

import flax.linen as nn
import jax

from mmtx.encoders.tower import Tower, TowerOptions, grid_position_embedding
from mmtx.nn import (
    KaldiFbank,
    LogMelSpectrogram,
    PatchEmbed,
    SpectrogramOptions,
)
from mmtx.nn.options import options


class AudioEncoder(TowerOptions, SpectrogramOptions):
    """Audio Spectrogram Transformer over time x frequency patches.

    ``audio`` float ``[B, S]`` waveform at ``sample_rate`` -> log-mel ``[B, F, M]`` (computed
    here, in float32, so the input pipeline stays light) -> patches ->
    ``(x, out)`` with ``x`` ``[B, N (+K class tokens), width]``, ``out["pooled"]``
    ``[B, width]`` and ``out["log_mel"]`` ``[B, F, M]`` (with ``capture_weights``,
    ``out["attention_weights"]``: every block's attention probabilities, ``[depth, B, H, N',
    N']`` for the dense kernel, see :class:`Tower`). With ``position_embedding="sincos"``
    any clip length works; ``"learned"`` needs exactly ``num_samples`` samples.

    ``patch_stride`` ``(time, mel)`` is the patch conv's stride, 0 = the patch size
    (non-overlapping patches); smaller strides overlap them (AST: 16 x 16 patches, stride 10),
    giving a ``((F - pt) // st + 1) x ((M - pf) // sf + 1)`` grid flattened time-major.
    ``patch_bias=False`` drops the conv's bias. Pooling: ``cls``, ``mean`` or ``cls_distill``
    (AST: class and distillation tokens, pooled as the mean of their outputs).
    ``class_token_posemb`` as in :class:`mmtx.encoders.ImageEncoder`.

    ``frontend="kaldi_fbank"`` computes Kaldi's log-mel filterbank instead of mmtx's
    (:class:`mmtx.nn.KaldiFbank`: what AST's feature extractor feeds AST), normalised as
    ``(x - log_mel_mean) / log_mel_std``.

    ``lengths`` (optional int ``[B]``, the batch's ``audio_length``): each row's real
    samples, the rest of the row being zero padding. With ``frontend="kaldi_fbank"`` the
    filterbank frames that reach past a row's length are 0.0 before the normalisation, as
    AST's extractor pads the filterbank (not the waveform) of a clip shorter than the model's;
    the ``log_mel`` frontend ignores it (its frames are those of the zero-padded waveform,
    as the input pipeline trains it). Without ``lengths`` every sample is taken as real.

    The transformer options (:class:`mmtx.encoders.TowerOptions`, keyword-only) go whole to
    the :class:`mmtx.encoders.Tower` (``tower``); the spectrogram's
    (:class:`mmtx.nn.SpectrogramOptions`: ``sample_rate``, ``window_length``, ``hop_length``,
    ``num_mel_bins``, ``min_frequency``, ``max_frequency``, keyword-only) to the frontend.
    """

    width: int
    num_samples: int = 16000
    log_mel_mean: float = 0.0
    log_mel_std: float = 1.0
    patch_size: tuple[int, int] = (16, 16)
    frontend: str = "log_mel"
    position_embedding: str = "sincos"
    patch_stride: tuple[int, int] = (0, 0)
    patch_bias: bool = True
    class_token_posemb: bool = False

    @nn.compact
    def __call__(
        self, audio: jax.Array, lengths: jax.Array | None = None, *, train: bool = False
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Encodes a batch of waveforms, float ``[B, S]`` (``lengths``: None or int ``[B]``,
        each row's real samples); see the class docstring."""
        if audio.ndim != 2:
            raise ValueError(f"audio must be [batch, samples] waveforms; got shape {audio.shape}")
        if self.frontend == "kaldi_fbank":
            # Kaldi's filterbank as AST's feature extractor computes it; its normalisation is
            # (x - mean) / (2 * std), so std is halved (exactly) to give (x - mean) / log_mel_std.
            log_mel = KaldiFbank(
                sample_rate=self.sample_rate,
                num_mel_bins=self.num_mel_bins,
                frame_length_ms=1000.0 * self.window_length / self.sample_rate,
                frame_shift_ms=1000.0 * self.hop_length / self.sample_rate,
                low_freq=self.min_frequency,
                high_freq=self.max_frequency,
                mean=self.log_mel_mean,
                std=self.log_mel_std / 2,
                max_frames=0,
            )(audio, lengths)
        elif self.frontend == "log_mel":
            log_mel = LogMelSpectrogram(
                **options(self, SpectrogramOptions),
                mean=self.log_mel_mean,
                std=self.log_mel_std,
            )(audio)
        else:
            raise ValueError(f"unknown audio frontend {self.frontend!r}; use log_mel | kaldi_fbank")
        strides = tuple(s or p for s, p in zip(self.patch_stride, self.patch_size, strict=True))
        x, (grid_t, grid_f) = PatchEmbed(
            self.width,
            tuple(self.patch_size),
            self.dtype,
            self.param_dtype,
            strides=strides,
            use_bias=self.patch_bias,
            name="patches",
        )(log_mel[..., None].astype(self.dtype))
        if grid_t == 0 or grid_f == 0:
            raise ValueError(
                f"audio of {audio.shape[1]} samples gives a {log_mel.shape[1:]} spectrogram, "
                f"smaller than one patch {tuple(self.patch_size)}"
            )
        x, posemb = grid_position_embedding(self, x, (grid_t, grid_f))
        stem = x
        tower = Tower(**options(self, TowerOptions), name="tower")
        x, out = tower(x, None, train=train, posemb=posemb)
        out.update(stem=stem, log_mel=log_mel)
        return x, out
