"""Audio: waveforms through an AST-style :class:`mmtx.encoders.AudioEncoder` (the log-mel
frontend runs inside the model)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Unpack

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mmtx.data import preprocessing
from mmtx.encoders import AudioEncoder
from mmtx.modalities.spec import ExampleContext, Headline, ModalitySpec
from mmtx.schemas.audio import (  # noqa: F401 (the patch grid's functions: re-exported)
    LENGTH_KEY,
    AudioSchema,
    audio_patch_grid,
    spectrogram_frames,
)


class AudioSpec(AudioSchema, ModalitySpec):
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

    # The log has shown audio's retrieval one way, audio to text (configs/base.py's eval lines).
    headline = Headline(
        retrieval=("audio_to_text_recall@1", "audio_to_text_recall@5"),
        zero_shot=("audio_zero_shot_top1",),
        hidden=("text_to_audio_recall@1",),
    )

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
        self, value: Any, **context: Unpack[ExampleContext]
    ) -> dict[str, np.ndarray]:
        audio = context["config"].model.audio
        waveform = preprocessing.preprocess_audio(
            value,
            audio.num_samples,
            sample_rate=context["sample_rate"] or audio.sample_rate,
            target_rate=audio.sample_rate,
            rng=context["rng"] if context["augment"] else None,
        )
        return {"audio": waveform}
