"""The ready-to-use model: :class:`Model` (the module, its params, its config and its
preprocessors, callable on raw inputs, loadable from a workdir's checkpoint) and
:func:`create_model`. Both are imported as ``mmtx.Model`` and ``mmtx.create_model``.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from mmtx import config as config_lib
from mmtx.batch_checks import check_batch
from mmtx.data.tokenizer import Tokenizer, create_tokenizer
from mmtx.modalities import get_modality, modality_names, present_key
from mmtx.models import (
    MultiModalTransformer,
    check_finite_outputs,
    embedding_keys,
    init_params,
)
from mmtx.train.checkpoint import Checkpointer
from mmtx.train.lora import merge_lora, scale


@dataclasses.dataclass
class Model:
    """A ready-to-use model: the linen module, its params, its config and its preprocessors.

    Call it on raw inputs: ``model(text_inputs="a red circle", image_features=img,
    audio_inputs=wav, audio_sample_rate=44100)``. Returns the module's output dict as numpy
    arrays (see :class:`mmtx.MultiModalTransformer`).

    The embeddings (``"text"``, ``"image"``, ``"audio"``, ``"fused"``: float32
    ``[B, embed_dim]``) are returned **un-normalised**: their L2 norms are whatever the
    projection heads give (a few units, not 1). The contrastive losses compare
    L2-normalised embeddings (cosine similarity), so normalise them before comparing or
    searching: ``model(..., normalize=True)`` returns them divided by their L2 norm
    (logits and scalars are left as they are).

    - ``text_inputs``: a ``str`` or a list/tuple/array of ``str`` (decode ``bytes`` first).
    - ``image_features``: ``[H, W, C]``, ``[H, W]`` (grey) or ``[B, H, W, C]``, uint8 or
      float in [0, 1]; encoded image ``bytes`` (PNG, JPEG, ...); a ``PIL.Image.Image``; or a
      list of images, each an array (any size), bytes or a PIL image. Each is resized to the
      model's size (shorter side, then centre crop). An alpha channel (RGBA, grey + alpha) is
      dropped, as PIL's ``convert("RGB")`` drops it.
    - ``audio_inputs``: float waveform(s): ``[S]`` or ``[B, S]`` mono; ``[S, C]`` or
      ``[B, S, C]`` with at most 8 channels, averaged to mono. A 2-D array whose last axis is
      at most 8 and shorter than its first is one multi-channel clip (``[16000, 2]`` is one
      stereo second), any other is a batch of mono clips.
    - ``audio_sample_rate``: the clips' rate in Hz (a positive int) when it differs from
      ``config.model.audio.sample_rate``; they are resampled.

    Images and audio must be finite. Every input is checked before anything is compiled;
    errors name the input (and the example of a batch: ``image_features[1]: ...``).
    """

    module: MultiModalTransformer
    params: Any
    config: ml_collections.ConfigDict
    tokenizer: Tokenizer
    step: int | None = None  # The checkpoint step loaded (None: not from a checkpoint).

    @classmethod
    def from_checkpoint(
        cls, workdir: str | os.PathLike, step: int | None = None, *, ema: bool = False
    ) -> Model:
        """Loads the model of a training run: the params saved in ``workdir/checkpoints`` at
        ``step`` (default: the newest intact one), onto this process's first device whatever
        mesh trained them, with the config they were saved with (the checkpoint's integrity
        record; ``workdir/config.json`` for checkpoints without one). ``Model.step`` is the
        step loaded. A tokenizer file named relative to the workdir (an imported
        checkpoint's ``tokenizer/...``) is read from there. A LoRA run's adapters are merged
        into the kernels they adapt (:func:`mmtx.train.lora.merge_lora`): ``Model.params``
        are a plain model's. ``ema=True`` loads the exponential moving average of the params
        (a run with ``config.train.ema_decay > 0``) instead of the params."""
        workdir = os.fspath(workdir)
        checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True)
        try:
            state, loaded = checkpointer.restore_arrays(step)
            record = checkpointer.read_record(loaded)
        finally:
            checkpointer.close()
        saved = (record or {}).get("config")
        if not saved:
            with open(os.path.join(workdir, "config.json")) as f:
                saved = json.load(f)
        config = config_lib.merge_overrides(config_lib.default_config(), saved)
        config.tokenizer.model_file = config_lib.workdir_file(config.tokenizer.model_file, workdir)
        config = config_lib.validate(config)
        if ema and state.get("ema_params") is None:
            raise ValueError(
                f"ema=True: the checkpoint at step {loaded} in {workdir} holds no EMA params "
                "(its run had config.train.ema_decay = 0)"
            )
        params = state["ema_params"] if ema else state["params"]
        if "lora" in params:  # a LoRA run: the adapters merged into the kernels they adapt
            params = merge_lora(params, scale(config.train.lora))
        model = create_model(config, params=params)
        model.step = loaded
        return model

    def preprocess(
        self,
        text_inputs: str | Sequence[str | None] | None = None,
        image_features: Any = None,
        audio_inputs: Any = None,
        audio_sample_rate: int | None = None,
        video_inputs: Any = None,
        **inputs: Any,
    ) -> dict[str, np.ndarray]:
        """Raw inputs (see the class docstring) -> a model batch dict of numpy arrays:
        ``text`` int32 ``[B, T]`` and ``text_mask`` bool ``[B, T]``, ``image`` float32
        ``[B, H, W, C]``, ``audio`` float32 ``[B, S]`` (and, with
        ``model.audio.frontend="kaldi_fbank"``, ``audio_length`` int32 ``[B]``: each clip's
        real samples, whose filterbank the encoder pads as AST's extractor does), ``video``
        float32 ``[B, T, H, W, C]``; shapes and types validated. A modality registered with
        :func:`mmtx.modalities.register_modality` takes its raw inputs by its
        ``raw_input`` keyword (in ``inputs``).

        A list of inputs may hold ``None`` for examples that lack that modality: the batch
        then carries ``present/<modality>`` bool ``[B]`` (False there) and a filler copy of
        another example, which the model ignores. Images go through
        :func:`mmtx.data.preprocessing.preprocess_image` (decoded if bytes, then made
        square as ``config.model.image.{resize, interpolation, resize_size}`` say; by
        default the shorter side resized bilinearly, centre crop), audio through
        :func:`mmtx.data.preprocessing.to_audio_batch` (mixed to mono, resampled when
        ``audio_sample_rate`` differs from the model's, cropped/padded to the model's clip
        length), video through
        :func:`mmtx.data.preprocessing.to_video_batch`: the evaluation path of the input
        pipeline.
        """
        raw = dict(inputs)
        for keyword, value in (
            ("text_inputs", text_inputs),
            ("image_features", image_features),
            ("audio_inputs", audio_inputs),
            ("video_inputs", video_inputs),
        ):
            if value is not None:
                raw[keyword] = value
        by_keyword = {get_modality(m).raw_input: m for m in modality_names()}
        unknown = sorted(k for k in raw if k not in by_keyword)
        if unknown:
            raise TypeError(
                f"unknown inputs {unknown}; this model's are "
                f"{[get_modality(m).raw_input for m in self.config.model.modalities]}"
            )
        options = {"audio_sample_rate": _sample_rate(audio_sample_rate)}
        batch: dict[str, np.ndarray] = {}
        sizes: dict[str, int] = {}
        for keyword, value in raw.items():
            modality = by_keyword[keyword]
            if modality not in self.config.model.modalities:
                raise ValueError(
                    f"{keyword}: this model has no encoder for {modality} (its modalities are "
                    f"{tuple(self.config.model.modalities)})"
                )
            spec = get_modality(modality)
            entries = spec.as_list(value)
            present = None
            if entries is not None and any(entry is None for entry in entries):
                present = np.asarray([entry is not None for entry in entries])
                if not present.any():
                    continue  # every example lacks it: the modality is absent
                filler = entries[int(np.argmax(present))]
                value = [filler if entry is None else entry for entry in entries]
            arrays = spec.from_raw(value, config=self.config, tokenizer=self.tokenizer, **options)
            batch.update(arrays)
            sizes[keyword] = len(arrays[modality])
            if present is not None:
                batch[present_key(modality)] = present
        if not batch:
            names = [get_modality(m).raw_input for m in self.config.model.modalities]
            raise ValueError(f"give at least one of {', '.join(names)} (not all None)")
        if len(set(sizes.values())) > 1:
            raise ValueError(f"inputs disagree on batch size (examples per input): {sizes}")
        return batch

    def apply(self, batch: dict[str, Any], *, train: bool = False, **kwargs: Any) -> Any:
        """``module.apply`` with this model's params."""
        return self.module.apply({"params": self.params}, batch, train=train, **kwargs)

    def __call__(
        self,
        text_inputs: str | Sequence[str | None] | None = None,
        image_features: Any = None,
        audio_inputs: Any = None,
        audio_sample_rate: int | None = None,
        video_inputs: Any = None,
        *,
        normalize: bool = False,
        **inputs: Any,
    ) -> dict[str, Any]:
        """Runs the model on raw inputs (see the class docstring).

        With ``normalize=True`` the embeddings (``"text"``, ``"image"``, ``"audio"``,
        ``"fused"``: float32 ``[B, embed_dim]``) are divided by their L2 norm, as the
        contrastive losses compare them; other outputs are unchanged.
        """
        batch = self.preprocess(
            text_inputs, image_features, audio_inputs, audio_sample_rate, video_inputs, **inputs
        )
        return self.run(batch, normalize=normalize)

    def encode(
        self,
        modality: str,
        inputs: Any,
        *,
        normalize: bool = False,
        audio_sample_rate: int | None = None,
    ) -> np.ndarray:
        """Embeds raw inputs of one ``modality`` alone: float32 ``[B, embed_dim]``, ``B`` the
        number of inputs, whatever the other modalities' batch sizes (open_clip's
        ``encode_text`` / ``encode_image``). ``inputs`` are what the modality's keyword of
        :meth:`__call__` takes (``text_inputs``, ``image_features``, ``audio_inputs``,
        ``video_inputs``); ``normalize=True`` divides by the L2 norm."""
        if modality not in self.config.model.modalities:
            raise ValueError(
                f"this model has no {modality!r} encoder (its modalities are "
                f"{tuple(self.config.model.modalities)})"
            )
        batch = self.preprocess(
            audio_sample_rate=audio_sample_rate, **{get_modality(modality).raw_input: inputs}
        )
        return self.run(batch, normalize=normalize)[modality]

    def encode_text(self, texts: str | Sequence[str], *, normalize: bool = False) -> np.ndarray:
        """Texts -> float32 ``[B, embed_dim]`` (:meth:`encode` of ``"text"``)."""
        return self.encode("text", texts, normalize=normalize)

    def encode_image(self, images: Any, *, normalize: bool = False) -> np.ndarray:
        """Images (arrays of any size, PIL images, encoded bytes) -> float32
        ``[B, embed_dim]`` (:meth:`encode` of ``"image"``)."""
        return self.encode("image", images, normalize=normalize)

    def encode_audio(
        self, clips: Any, *, sample_rate: int | None = None, normalize: bool = False
    ) -> np.ndarray:
        """Waveforms (at ``sample_rate``, default the model's) -> float32 ``[B, embed_dim]``
        (:meth:`encode` of ``"audio"``)."""
        return self.encode("audio", clips, normalize=normalize, audio_sample_rate=sample_rate)

    def encode_video(self, videos: Any, *, normalize: bool = False) -> np.ndarray:
        """Videos (``[T, H, W, C]`` frames each) -> float32 ``[B, embed_dim]``
        (:meth:`encode` of ``"video"``)."""
        return self.encode("video", videos, normalize=normalize)

    def run(self, batch: Mapping[str, Any], *, normalize: bool = False) -> dict[str, Any]:
        """Runs the model (jitted, in inference mode) on a batch from :meth:`preprocess`
        (``text`` int32 ``[B, T]``, ``text_mask`` bool ``[B, T]``, ``image`` float32
        ``[B, H, W, C]``, ``audio`` float32 ``[B, S]``, ``audio_length`` int32 ``[B]``) and
        returns the outputs as numpy arrays, as ``__call__`` does (``normalize`` as there).
        The batch is checked first.
        Each new batch shape compiles once; keep ``B`` fixed (pad the last batch) when
        running many batches. Inputs must be finite and within each modality's range
        (:meth:`mmtx.modalities.ModalitySpec.check_values`); an embedding that still comes
        out NaN or inf raises :class:`NonFiniteOutputError` rather than being returned.
        """
        batch = dict(batch)
        # Under jit the module sees traced ids and cannot check them: check the batch here.
        check_batch(batch, self.module.encoders)
        outputs = jax.tree.map(np.asarray, _jitted_apply(self.module, self.params, batch))
        check_finite_outputs(outputs, self.params, self.config.dtype)
        if normalize:
            for key in embedding_keys():
                if key in outputs:
                    outputs[key] = l2_normalize(outputs[key])
        return outputs


def l2_normalize(x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """``x / max(||x||, eps)`` along the last axis: float32 ``[..., D]`` -> float32
    ``[..., D]`` (the normalisation of :func:`mmtx.losses.l2_normalize`, in numpy)."""
    x = np.asarray(x, np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, np.float32(eps))


def _sample_rate(rate: Any) -> int | None:
    """``audio_sample_rate`` checked: None, or a positive whole number of Hz, as an int."""
    if rate is None:
        return None
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
        raise TypeError(
            f"audio_sample_rate must be a positive int (Hz); got {type(rate).__name__} {rate!r}"
        )
    if not (rate > 0 and float(rate).is_integer()):
        raise ValueError(f"audio_sample_rate must be a positive whole number of Hz; got {rate!r}")
    return int(rate)


@jax.jit(static_argnums=0)
def _jitted_apply(module: MultiModalTransformer, params: Any, batch: dict[str, Any]) -> Any:
    return module.apply({"params": params}, batch, train=False)


def create_model(
    config: ml_collections.ConfigDict | str | os.PathLike, *, seed: int = 0, params: Any = None
) -> Model:
    """Builds an :class:`Model` from a ConfigDict, ``configs/x.py[:arg]`` or a JSON file.

    Params are freshly initialised from ``seed`` unless ``params`` is given.
    """
    config = config_lib.load_config(config)
    tokenizer = create_tokenizer(config.tokenizer.type, config.tokenizer.model_file)
    module = MultiModalTransformer.from_config(config, vocab_size=tokenizer.vocab_size)
    if params is None:
        params = init_params(module, config, jax.random.key(seed))
    return Model(module=module, params=params, config=config, tokenizer=tokenizer)
