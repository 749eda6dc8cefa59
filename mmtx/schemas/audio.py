"""The audio modality's schema: its config group, checks, the spectrogram's patch grid and
token count (the encoder: :mod:`mmtx.modalities.audio`). Pure arithmetic on the config:
:func:`spectrogram_frames`, :func:`audio_patch_grid`."""

from __future__ import annotations

import ml_collections

from mmtx.schemas import tower_options
from mmtx.schemas.field import Field
from mmtx.schemas.ranges import Above, AtLeast
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
# The spectrogram frontends (model.audio.frontend).
FRONTENDS = ("log_mel", "kaldi_fbank")


class AudioSchema(ModalitySchema):
    """Mono waveforms of ``num_samples`` at ``sample_rate`` (see
    :class:`mmtx.modalities.AudioSpec`)."""

    name = "audio"
    raw_input = "audio_inputs"
    example_key = "audio"
    extra_keys = (LENGTH_KEY,)
    # cls | mean | cls_distill (AST: class and distillation tokens, their outputs averaged).
    poolings = ("cls", "mean", "cls_distill")
    fields = (
        Field("sample_rate", 16000, "Hz of the input waveform.", range=Above(0)),
        Field(
            "num_samples", 16000, "Clip length fed to the model (cropped/padded).", range=Above(0)
        ),
        Field("window_length", 400, "STFT window in samples (25 ms at 16 kHz).", range=Above(0)),
        Field("hop_length", 160, "STFT hop in samples (10 ms at 16 kHz).", range=Above(0)),
        Field("num_mel_bins", 64, "Mel filterbank size.", range=Above(0)),
        Field("min_frequency", 50.0, "Lowest mel filter edge in Hz.", range=AtLeast(0)),
        Field(
            "max_frequency", 8000.0, "Highest mel edge in Hz (<= sample_rate / 2).", range=Above(0)
        ),
        Field(
            "frontend",
            "log_mel",
            "log_mel (mmtx's log-mel) | kaldi_fbank (Kaldi's filterbank as AST's feature "
            "extractor computes it: DC removal, pre-emphasis, Hann window, Kaldi mel scale).",
            choices=FRONTENDS,
        ),
        Field("log_mel_mean", -4.0, "Normalisation of log-mel values: (x - mean) / std."),
        Field("log_mel_std", 4.0, "The std of that normalisation.", range=Above(0)),
        Field(
            "patch_size", (16, 16), "(time frames, mel bins) per patch, AST-style.", range=Above(0)
        ),
        *tower_options.SIZES,
        tower_options.ATTENTION,
        tower_options.POOLING,
        tower_options.POSITION_EMBEDDING.with_default("sincos"),  # sincos works for any clip length
        Field(
            "patch_stride",
            (0, 0),
            "(time, mel) stride of the patches; 0 = the patch size (no overlap). AST: (10, 10).",
            range=AtLeast(0),
        ),
        tower_options.PATCH_BIAS,
        tower_options.CLASS_TOKEN_POSEMB,
        *tower_options.NORMS_AND_HEAD,
    )
    # Position is not audible; motion is (a pitch glide) when the data has video.
    attributes = ("shape", "colour", "size", "motion")
    description = "waveforms"
    value_range = "samples are in about [-1, 1]"

    def validate(self, group: ml_collections.ConfigDict, require: Require) -> None:
        self.require_choices(group, require)
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
