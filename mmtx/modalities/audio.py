"""Audio: waveforms through an AST-style :class:`mmtx.encoders.AudioEncoder` (the log-mel
frontend runs inside the model)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mmtx.data import preprocessing
from mmtx.encoders import AudioEncoder
from mmtx.modalities.spec import ModalitySpec, Require


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


class AudioSpec(ModalitySpec):
    """Sound: ``audio`` float32 ``[B, num_samples]`` mono waveforms at ``sample_rate``, and
    optionally ``audio_length`` int32 ``[B]``: each row's real samples (``0 <= length <=
    S``), the rest of the row being zero padding.

    :class:`mmtx.Model`'s raw inputs carry ``audio_length`` when ``frontend="kaldi_fbank"``
    (the clip's length after resampling, at most ``num_samples``), and the encoder then
    pads the filterbank of a short clip, not its waveform, as AST's feature extractor does
    (:class:`mmtx.encoders.AudioEncoder`). The input pipeline, synthetic data and dummy
    inputs carry no ``audio_length``: their clips are zero-padded waveforms, every sample
    taken as real, as with the ``log_mel`` frontend (whose raw inputs carry none either).
    """

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

    def encoder_class(self) -> type[nn.Module]:
        return AudioEncoder

    def encode(
        self, encoder: nn.Module, batch: Mapping[str, jax.Array], *, train: bool
    ) -> tuple[jax.Array, dict[str, Any]]:
        # Without audio_length the encoder runs exactly as before it existed (same program).
        return encoder(batch["audio"], batch.get(LENGTH_KEY), train=train)

    def check_values(self, batch: Mapping[str, Any], fields: Mapping[str, Any]) -> None:
        """The waveform's checks (:meth:`ModalitySpec.check_values`) and, when the batch has
        ``audio_length``, that it is integer ``[B]`` within ``[0, S]`` (``TypeError`` for
        another dtype, ``ValueError`` naming the first bad example otherwise)."""
        super().check_values(batch, fields)
        if LENGTH_KEY not in batch:
            return
        audio_shape = np.shape(batch["audio"])
        lengths = np.asarray(batch[LENGTH_KEY])
        if lengths.shape != audio_shape[:1]:
            raise ValueError(
                f"{LENGTH_KEY} must be [batch] = {audio_shape[:1]} (one length per clip of "
                f"audio {audio_shape}); got shape {lengths.shape}"
            )
        if not np.issubdtype(lengths.dtype, np.integer):
            raise TypeError(
                f"{LENGTH_KEY} must hold integer sample counts; got dtype {lengths.dtype}"
            )
        samples = audio_shape[1] if len(audio_shape) > 1 else 0
        bad = (lengths < 0) | (lengths > samples)
        if bad.any():
            index = int(np.argmax(bad))
            raise ValueError(
                f"{LENGTH_KEY}[{index}] = {int(lengths[index])} is not in [0, {samples}] (the "
                f"real samples of a clip of {samples})"
            )

    def dummy_input(
        self, group: ml_collections.ConfigDict, batch_size: int
    ) -> dict[str, jax.Array]:
        return {"audio": jnp.zeros((batch_size, group.num_samples), jnp.float32)}

    def from_raw(
        self, inputs: Any, *, config: ml_collections.ConfigDict, tokenizer: Any, **options
    ) -> dict[str, np.ndarray]:
        """Raw clips -> ``audio`` float32 ``[B, num_samples]`` (cropped or zero-padded) and,
        with ``frontend="kaldi_fbank"``, ``audio_length`` int32 ``[B]`` (see the class
        docstring)."""
        audio = config.model.audio
        # One clip per entry of a list (they may differ in length), each cropped/padded alone;
        # otherwise one array of clips.
        per_clip = isinstance(inputs, list | tuple)
        parts = [
            preprocessing.to_audio_batch_with_lengths(
                clip,
                audio.num_samples,
                sample_rate=options.get("audio_sample_rate"),
                target_rate=audio.sample_rate,
                name=f"audio_inputs[{i}]" if per_clip else "audio_inputs",
            )
            for i, clip in enumerate(inputs if per_clip else [inputs])
        ]
        batch = {"audio": np.concatenate([waves for waves, _ in parts], axis=0)}
        if audio.frontend == "kaldi_fbank":  # the only frontend that reads it
            batch[LENGTH_KEY] = np.concatenate([lengths for _, lengths in parts], axis=0)
        return batch

    def as_list(self, inputs: Any) -> list[Any] | None:
        # Only a list that holds None is read per example; other lists stay as they are
        # (a nested list is an array of samples).
        if isinstance(inputs, list | tuple) and any(v is None for v in inputs):
            return list(inputs)
        return None

    def preprocess_example(
        self,
        value: Any,
        *,
        config: ml_collections.ConfigDict,
        tokenizer: Any,
        rng: np.random.Generator | None,
        augment: bool,
        sample_rate: int | None,
    ) -> dict[str, np.ndarray]:
        audio = config.model.audio
        waveform = preprocessing.preprocess_audio(
            value,
            audio.num_samples,
            sample_rate=sample_rate or audio.sample_rate,
            target_rate=audio.sample_rate,
            rng=rng if augment else None,
        )
        return {"audio": waveform}
