"""The audio modality's schema: its config group, checks, the spectrogram's patch grid and
token count (the encoder: :mod:`mmtx.modalities.audio`). Pure arithmetic on the config:
:func:`spectrogram_frames`, :func:`audio_patch_grid`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import ml_collections

from mmtx.schemas.schema import ModalitySchema, Require


def spectrogram_frames(audio: ml_collections.ConfigDict) -> int:
    """STFT frames the log-mel frontend makes of ``audio.num_samples`` samples (no padding)."""
    return 1 + (audio.num_samples - audio.window_length) // audio.hop_length


def audio_patch_grid(audio: ml_collections.ConfigDict) -> tuple[int, int]:
    """(time, mel) patches the audio tower makes of ``audio.num_samples`` samples: per axis
    ``(size - patch) // stride + 1`` (0 when the spectrogram is smaller than a patch), the
    stride being ``patch_stride`` or, where that is 0, the patch size."""
    sizes = (spectrogram_frames(audio), audio.num_mel_bins)
    grid = []
    for size, patch, stride in zip(sizes, audio.patch_size, audio.patch_stride, strict=True):
        grid.append((size - patch) // (stride or patch) + 1 if size >= patch else 0)
    return grid[0], grid[1]


# The optional batch key of each row's real samples, int32 [B] (see AudioSpec).
LENGTH_KEY = "audio_length"


class AudioSchema(ModalitySchema):
    """Mono waveforms of ``num_samples`` at ``sample_rate`` (see
    :class:`mmtx.modalities.AudioSpec`)."""

    name = "audio"
    raw_input = "audio_inputs"
    example_key = "audio"
    extra_keys = (LENGTH_KEY,)
    # cls | mean | cls_distill (AST: class and distillation tokens, their outputs averaged).
    poolings = ("cls", "mean", "cls_distill")
    ranges: ClassVar[Mapping[str, str]] = {
        "sample_rate": "> 0",
        "num_samples": "> 0",
        "window_length": "> 0",
        "hop_length": "> 0",
        "num_mel_bins": "> 0",
        "min_frequency": ">= 0",
        "max_frequency": "> 0",
        "log_mel_std": "> 0",
        "patch_size": "> 0",
        "patch_stride": ">= 0",
    }
    # Position is not audible; motion is (a pitch glide) when the data has video.
    attributes = ("shape", "colour", "size", "motion")
    description = "waveforms"
    value_range = "samples are in about [-1, 1]"

    def default_config(self) -> ml_collections.ConfigDict:
        g = ml_collections.ConfigDict()
        g.sample_rate = 16000  # Hz of the input waveform.
        g.num_samples = 16000  # Clip length fed to the model (raw inputs are cropped/padded).
        g.window_length = 400  # STFT window in samples (25 ms at 16 kHz).
        g.hop_length = 160  # STFT hop in samples (10 ms at 16 kHz).
        g.num_mel_bins = 64  # Mel filterbank size.
        g.min_frequency = 50.0  # Lowest mel filter edge in Hz.
        g.max_frequency = 8000.0  # Highest mel filter edge in Hz (<= sample_rate / 2).
        # log_mel (mmtx's log-mel) | kaldi_fbank (Kaldi's filterbank as AST's feature extractor
        # computes it: DC removal, pre-emphasis, Hann window, Kaldi mel scale).
        g.frontend = "log_mel"
        g.log_mel_mean = -4.0  # Normalisation of log-mel values: (x - mean) / std.
        g.log_mel_std = 4.0
        g.patch_size = (16, 16)  # (time frames, mel bins) per patch, AST-style.
        g.width = 128
        g.depth = 2
        g.num_heads = 4
        g.mlp_dim = 256
        g.attention = "dense"
        # cls | mean | cls_distill (AST: class and distillation tokens, their outputs averaged).
        g.pooling = "cls"
        g.position_embedding = "sincos"  # sincos works for any clip length.
        # (time, mel) stride of the patches; 0 = the patch size (no overlap). AST: (10, 10).
        g.patch_stride = (0, 0)
        g.patch_bias = True  # Bias of the patch projection.
        g.class_token_posemb = False  # As model.image.class_token_posemb.
        g.activation = "gelu_tanh"  # MLP's: gelu_tanh | gelu (exact erf) | quick_gelu.
        g.norm_eps = 1e-6  # Epsilon of every LayerNorm in the tower (CLIP 1e-5).
        g.pre_norm = False  # A LayerNorm before the first block (CLIP's ln_pre).
        g.final_norm = True  # The LayerNorm after the last block, on every token.
        # Projection of the pooled output to model.embed_dim: dense | no_bias (kernel only) |
        # none (the pooled output itself; needs width == model.embed_dim).
        g.projection = "dense"
        return g

    def validate(self, group: ml_collections.ConfigDict, require: Require) -> None:
        require(
            group.frontend in ("log_mel", "kaldi_fbank"),
            "model.audio.frontend",
            f"{group.frontend!r} is not one of ('log_mel', 'kaldi_fbank')",
        )
        require(
            group.num_samples >= group.window_length,
            "model.audio.num_samples",
            f"must be >= window_length ({group.window_length}) to make one STFT frame; "
            f"got {group.num_samples}",
        )
        require(
            group.min_frequency < group.max_frequency,
            "model.audio.min_frequency",
            f"must be < max_frequency ({group.max_frequency}); got {group.min_frequency}",
        )
        require(
            group.max_frequency <= group.sample_rate / 2,
            "model.audio.max_frequency",
            "must be <= sample_rate / 2",
        )
        frames = spectrogram_frames(group)
        require(
            frames >= group.patch_size[0] and group.num_mel_bins >= group.patch_size[1],
            "model.audio.patch_size",
            f"{tuple(group.patch_size)} is larger than the spectrogram "
            f"({frames} frames x {group.num_mel_bins} mel bins)",
        )
        strides = zip(group.patch_stride, group.patch_size, strict=True)
        for axis, (stride, patch) in enumerate(strides):
            require(
                stride <= patch,
                "model.audio.patch_stride",
                f"{tuple(group.patch_stride)}: a stride larger than the patch "
                f"{tuple(group.patch_size)} skips spectrogram {('frames', 'mel bins')[axis]} "
                "(0 = the patch size)",
            )

    def num_tokens(self, group: ml_collections.ConfigDict) -> int:
        grid_t, grid_f = audio_patch_grid(group)
        return grid_t * grid_f

    def stem_flops(self, group: ml_collections.ConfigDict) -> float:
        frames = spectrogram_frames(group)
        fft = 1 << (group.window_length - 1).bit_length()
        mel = 2.0 * frames * (fft // 2 + 1) * group.num_mel_bins
        patch_t, patch_f = group.patch_size
        patches = (frames // patch_t) * (group.num_mel_bins // patch_f)
        return mel + 2.0 * patches * patch_t * patch_f * group.width
