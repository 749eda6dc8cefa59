"""The multi-modal model: encoders -> fusion -> heads, and :func:`create_model`."""

from __future__ import annotations

import dataclasses
import json
import numbers
import os
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax.core import FrozenDict

from mmtx import config as config_lib
from mmtx.data.preprocessing import to_audio_batch, to_image_batch
from mmtx.data.tokenizer import Tokenizer, create_tokenizer
from mmtx.encoders import AudioEncoder, ImageEncoder, TextEncoder
from mmtx.fusion import FUSION_MODULES, ModalityFeatures
from mmtx.nn.attention import default_kernel_init

Dtype = Any
ENCODERS = {"text": TextEncoder, "image": ImageEncoder, "audio": AudioEncoder}
# The outputs that are embeddings [B, embed_dim] (Model(..., normalize=True) scales them).
EMBEDDING_KEYS = (*ENCODERS, "fused")
BATCH_KEYS = ("text", "text_mask", "image", "audio", "label")


def resolve_dtype(name: str) -> jnp.dtype:
    """``"auto"`` is bfloat16 on TPU/GPU and float32 on CPU; other names map to jnp dtypes."""
    if name == "auto":
        return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
    return jnp.dtype(name)


def _concrete(value: Any) -> np.ndarray | None:
    """``value`` as a host array, or None when jit traces it (or it spans other hosts)."""
    if isinstance(value, jax.core.Tracer):
        return None
    if isinstance(value, jax.Array) and not value.is_fully_addressable:
        return None
    return np.asarray(value)


def check_batch(batch: Mapping[str, Any], encoders: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Checks a model batch against a model's encoders; returns the modalities it holds.

    ``batch`` is the dict of docs/design.md (``text`` int ``[B, T]``, ``text_mask`` bool
    ``[B, T]``, ``image`` float ``[B, H, W, C]``, ``audio`` float ``[B, S]``); ``encoders``
    is :attr:`MultiModalTransformer.encoders`. Checked: every modality has an encoder, at
    least one is present, batch sizes agree and are nonzero, ``text_mask`` has the shape of
    ``text``; and on concrete values (not under jit, which traces them): text ids are
    integers in ``[0, vocab_size)``, and image and audio values are finite. Raises
    ``ValueError`` (``TypeError`` for non-integer ids) before anything is compiled.
    """
    present = [m for m in ENCODERS if m in batch and batch[m] is not None]
    unsupported = [m for m in present if m not in encoders]
    if unsupported:
        raise ValueError(
            f"batch has {unsupported}, which this model has no encoder for; "
            f"its modalities are {sorted(encoders)}"
        )
    if not present:
        raise ValueError(
            f"batch has none of the model's modalities {sorted(encoders)}; got keys {sorted(batch)}"
        )
    sizes = {m: int(np.shape(batch[m])[0]) for m in present}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"modalities disagree on batch size: {sizes}")
    if 0 in sizes.values():
        raise ValueError("the batch is empty (batch size 0)")
    if "text" in present and (ids := _concrete(batch["text"])) is not None:
        # An id past the embedding table would silently read a clipped row inside XLA.
        vocab = encoders["text"]["vocab_size"]
        if not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"text must hold integer token ids; got dtype {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= vocab):
            raise ValueError(
                f"text token ids must be in [0, {vocab}) (the text vocabulary); got "
                f"values in [{ids.min()}, {ids.max()}]"
            )
    for modality in ("image", "audio"):
        if modality in present and (values := _concrete(batch[modality])) is not None:
            finite = np.isfinite(values.reshape(values.shape[0], -1)).all(axis=1)
            if not finite.all():
                raise ValueError(
                    f"{modality}[{int(np.argmin(finite))}] has non-finite values (NaN or inf)"
                )
    if "text_mask" in batch and "text" in present:
        if np.shape(batch["text_mask"]) != np.shape(batch["text"]):
            raise ValueError(
                f"text_mask shape {np.shape(batch['text_mask'])} differs from text shape "
                f"{np.shape(batch['text'])}"
            )
    return present


class MultiModalTransformer(nn.Module):
    """Encoders for each configured modality, a fusion module, and output heads.

    Build it with :meth:`from_config`. With ``modality_dropout > 0`` and ``train=True``, each
    example drops each modality from the fusion with that probability (never all of them; the
    per-modality embeddings are unaffected), so the model learns to cope with missing inputs.

    ``__call__(batch, train=...)`` takes a batch dict
    (any subset of ``text``/``text_mask``/``image``/``audio``; see docs/design.md) and returns a
    dict with, for every present modality ``m``, ``out[m]`` float32 ``[B, embed_dim]``;
    ``"fused"`` float32 ``[B, embed_dim]`` (embeddings un-normalised: the losses L2-normalise
    them; absent with ``fusion_type="none"``, which has no fusion); ``"logits"`` float32
    ``[B, num_classes]`` when ``num_classes > 0``; ``"logit_scale"`` and ``"logit_bias"``
    float32 scalars (the learnable temperature and bias of the contrastive losses); with
    ``attribute_heads``, ``"attribute_logits"``: ``"<modality>/<attribute>"`` -> float32
    ``[B, classes]``, predicted from that modality's embedding; and, with gated fusion,
    ``"fusion_weights"``: present modality -> float32 scalar weight. With
    ``capture_weights``, ``"intermediates"``: modality -> that encoder's ``out`` and
    ``"fusion"`` -> the fusion's ``out`` (without their ``[B, T, D]`` token arrays), which
    hold the attention probabilities as ``"attention_weights"`` (see :mod:`mmtx.encoders`,
    :mod:`mmtx.fusion`).

    ``projections`` maps a modality to how its pooled output becomes ``out[m]`` (the
    ``<m>_head`` param): ``"dense"`` (kernel and bias; the default for a modality not in
    it), ``"no_bias"`` (kernel only) or ``"none"`` (the pooled output itself, whose width
    must be ``embed_dim``; no param).
    """

    encoders: FrozenDict[str, FrozenDict[str, Any]]
    fusion_type: str
    fusion: FrozenDict[str, Any]
    embed_dim: int
    projections: FrozenDict[str, str] = FrozenDict()
    num_classes: int = 0
    modality_dropout: float = 0.0
    attribute_heads: FrozenDict[str, FrozenDict[str, int]] = FrozenDict()
    temperature_init: float = 0.07
    logit_bias_init: float = -10.0
    capture_weights: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @classmethod
    def from_config(
        cls, config: ml_collections.ConfigDict, vocab_size: int, **overrides: Any
    ) -> MultiModalTransformer:
        """Builds the module from a validated config; ``vocab_size`` comes from the tokenizer.

        A nonzero ``config.model.text.vocab_size`` must hold every tokenizer id: a smaller
        table would make XLA read clipped rows for the ids past it (``ValueError``).
        """
        model = config.model
        if "text" in model.modalities and 0 < model.text.vocab_size < vocab_size:
            raise ValueError(
                f"config.model.text.vocab_size: {model.text.vocab_size} is smaller than the "
                f"tokenizer's vocabulary ({vocab_size} ids); set it to >= {vocab_size}, or 0 to "
                "take the tokenizer's"
            )
        common = dict(
            dropout_rate=model.dropout_rate,
            remat=model.remat,
            scan=model.scan_layers,
            # auto | xla | cudnn, resolved per attention layer (mmtx.nn.resolve_implementation).
            attention_implementation=config.attention.get("implementation", "auto"),
        )

        def attention_options(kernel: str) -> FrozenDict:
            return FrozenDict(config.attention[kernel].to_dict() if kernel != "dense" else {})

        encoders, projections = {}, {}
        for modality in model.modalities:
            kwargs = {**model[modality].to_dict(), **common}
            projections[modality] = kwargs.pop("projection")
            kwargs["attention_options"] = attention_options(kwargs["attention"])
            if modality == "text":
                kwargs["vocab_size"] = model.text.vocab_size or vocab_size
            kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
            encoders[modality] = kwargs
        fusion_type = config.fusion.type
        fusion = {
            **config.fusion.to_dict(),
            **common,
            "attention_options": attention_options(config.fusion.attention),
            "cross_attention_options": attention_options(config.fusion.cross_attention),
        }
        # Each fusion module takes the fields it declares (gated needs only its width).
        if fusion_type == config_lib.NO_FUSION:
            accepted = set()
        else:
            accepted = {f.name for f in dataclasses.fields(FUSION_MODULES[fusion_type])}
        fusion = {k: v for k, v in fusion.items() if k in accepted}
        # Frozen so that the module is hashable (it is a static argument to jit).
        return cls(
            encoders=FrozenDict(encoders),
            fusion_type=fusion_type,
            fusion=FrozenDict(fusion),
            embed_dim=model.embed_dim,
            projections=FrozenDict(projections),
            num_classes=model.num_classes,
            modality_dropout=model.modality_dropout,
            attribute_heads=FrozenDict(
                {
                    m: FrozenDict({a: model.attribute_classes[a] for a in names})
                    for m, names in model.attribute_modalities.items()
                    if m in model.modalities
                }
            ),
            temperature_init=model.temperature_init,
            logit_bias_init=model.logit_bias_init,
            dtype=resolve_dtype(config.dtype),
            param_dtype=jnp.dtype(config.param_dtype),
            **overrides,
        )

    @nn.compact
    def __call__(self, batch: dict[str, jax.Array], *, train: bool = False) -> dict[str, Any]:
        """Encodes, fuses and projects a batch (see the class docstring)."""
        present = check_batch(batch, self.encoders)
        common = dict(
            capture_weights=self.capture_weights, dtype=self.dtype, param_dtype=self.param_dtype
        )
        features: dict[str, ModalityFeatures] = {}
        outputs: dict[str, Any] = {}
        for modality in present:
            encoder = ENCODERS[modality](**self.encoders[modality], **common, name=modality)
            if modality == "text":
                mask = batch.get("text_mask")
                if mask is None:
                    mask = batch["text"] != 0
                tokens, out = encoder(batch["text"], mask, train=train)
            else:
                tokens, out = encoder(batch[modality], train=train)
            features[modality] = ModalityFeatures(tokens, out["mask"], out["pooled"])
            if self.capture_weights:  # the encoder's intermediates, less its token arrays
                outputs.setdefault("intermediates", {})[modality] = _small_outputs(out)
            outputs[modality] = self._projection(modality, out["pooled"])
            for name, classes in self.attribute_heads.get(modality, {}).items():
                head = self._head(f"{modality}_{name}_head", classes)
                outputs.setdefault("attribute_logits", {})[f"{modality}/{name}"] = head(
                    outputs[modality]
                )

        if self.fusion_type != config_lib.NO_FUSION:
            self._fuse(features, outputs, train=train)
        outputs["logit_scale"] = self.param(
            "logit_scale",
            nn.initializers.constant(-np.log(self.temperature_init)),
            (),
            jnp.float32,
        )
        outputs["logit_bias"] = self.param(
            "logit_bias", nn.initializers.constant(self.logit_bias_init), (), jnp.float32
        )
        return outputs

    def _fuse(
        self, features: dict[str, ModalityFeatures], outputs: dict[str, Any], *, train: bool
    ) -> None:
        """Runs the fusion (modality dropout first, when training) and its heads; adds
        ``"fused"``, ``"logits"`` and ``"fusion_weights"`` to ``outputs``."""
        if train and self.modality_dropout > 0 and len(features) > 1:
            keep = self._modality_keep_mask(
                len(features), next(iter(features.values())).tokens.shape[0]
            )
            features = {m: f._replace(keep=keep[:, i]) for i, (m, f) in enumerate(features.items())}

        fusion_class = FUSION_MODULES[self.fusion_type]
        fusion_kwargs = dict(self.fusion)
        if "capture_weights" in {f.name for f in dataclasses.fields(fusion_class)}:
            fusion_kwargs["capture_weights"] = self.capture_weights
        fusion = fusion_class(
            **fusion_kwargs, dtype=self.dtype, param_dtype=self.param_dtype, name="fusion"
        )
        fused, fusion_out = fusion(features, train=train)
        fused = nn.LayerNorm(dtype=self.dtype, param_dtype=self.param_dtype, name="fused_norm")(
            fused
        )
        outputs["fused"] = self._head("fused_head", self.embed_dim)(fused)
        if self.num_classes:
            outputs["logits"] = self._head("classifier", self.num_classes)(fused)
        if "weights" in fusion_out:
            outputs["fusion_weights"] = fusion_out["weights"]
        if self.capture_weights:
            outputs.setdefault("intermediates", {})["fusion"] = _small_outputs(fusion_out)

    def _modality_keep_mask(self, num_modalities: int, batch: int) -> jax.Array:
        """bool ``[B, M]``: each modality kept with prob ``1 - modality_dropout``, at least one
        per example (a random one when all were dropped)."""
        drop_rng, pick_rng = jax.random.split(self.make_rng("dropout"))
        keep = jax.random.bernoulli(drop_rng, 1.0 - self.modality_dropout, (batch, num_modalities))
        rescue = jax.nn.one_hot(
            jax.random.randint(pick_rng, (batch,), 0, num_modalities), num_modalities, dtype=bool
        )
        return jnp.where(jnp.any(keep, axis=1, keepdims=True), keep, rescue)

    def _projection(self, modality: str, pooled: jax.Array) -> jax.Array:
        """``pooled`` ``[B, width]`` -> the modality's float32 ``[B, embed_dim]`` embedding,
        as ``projections[modality]`` says."""
        projection = self.projections.get(modality, "dense")
        if projection == "none":
            if pooled.shape[-1] != self.embed_dim:
                raise ValueError(
                    f"projection 'none' of {modality} needs width == embed_dim; got "
                    f"{pooled.shape[-1]} and {self.embed_dim}"
                )
            return pooled.astype(jnp.float32)
        if projection not in ("dense", "no_bias"):
            raise ValueError(f"unknown projection {projection!r} of {modality}")
        head = self._head(f"{modality}_head", self.embed_dim, use_bias=projection == "dense")
        return head(pooled)

    def _head(self, name: str, features: int, use_bias: bool = True) -> nn.Module:
        dense = nn.Dense(
            features,
            use_bias=use_bias,
            kernel_init=nn.with_logical_partitioning(default_kernel_init, ("embed", None)),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name=name,
        )
        return lambda x: dense(x).astype(jnp.float32)


def _small_outputs(out: dict[str, Any]) -> dict[str, Any]:
    """An encoder's or fusion's ``out`` without its token-stream arrays ``[B, T, D]``."""
    return {k: v for k, v in out.items() if k not in ("encoded", "pre_norm", "stem", "tokens")}


@dataclasses.dataclass
class Model:
    """A ready-to-use model: the linen module, its params, its config and its preprocessors.

    Call it on raw inputs: ``model(text_inputs="a red circle", image_features=img,
    audio_inputs=wav, audio_sample_rate=44100)``. Returns the module's output dict as numpy
    arrays (see :class:`MultiModalTransformer`).

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
        # Imported here: checkpoints belong to the training layer, which imports this module.
        from mmtx.train.checkpoint import Checkpointer

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
            from mmtx.train.lora import merge_lora, scale

            params = merge_lora(params, scale(config.train.lora))
        model = create_model(config, params=params)
        model.step = loaded
        return model

    def preprocess(
        self,
        text_inputs: str | Sequence[str] | None = None,
        image_features: np.ndarray | None = None,
        audio_inputs: np.ndarray | None = None,
        audio_sample_rate: int | None = None,
    ) -> dict[str, np.ndarray]:
        """Raw inputs (see the class docstring) -> a model batch dict of numpy arrays:
        ``text`` int32 ``[B, T]`` and ``text_mask`` bool ``[B, T]``, ``image`` float32
        ``[B, H, W, C]``, ``audio`` float32 ``[B, S]``; shapes and types validated.

        Images go through :func:`mmtx.data.preprocessing.preprocess_image` (decoded if
        bytes, shorter side resized, centre crop), audio through
        :func:`mmtx.data.preprocessing.to_audio_batch` (mixed to mono, resampled when
        ``audio_sample_rate`` differs from the model's, cropped/padded to the model's clip
        length): the evaluation path of the input pipeline.
        """
        model = self.config.model
        batch: dict[str, np.ndarray] = {}
        if text_inputs is not None:
            texts = _text_list(text_inputs)
            if not texts:
                raise ValueError("text_inputs is an empty list")
            batch["text"], batch["text_mask"] = self.tokenizer(texts, model.text.max_length)
            empty = [i for i, row in enumerate(batch["text_mask"]) if not row.any()]
            if empty:
                raise ValueError(f"text_inputs{empty} encode to no tokens (empty strings?)")
        if image_features is not None:
            image = model.image
            batch["image"] = to_image_batch(
                image_features, image.image_size, image.channels, name="image_features"
            )
        if audio_inputs is not None:
            batch["audio"] = to_audio_batch(
                audio_inputs,
                model.audio.num_samples,
                sample_rate=_sample_rate(audio_sample_rate),
                target_rate=model.audio.sample_rate,
                name="audio_inputs",
            )
        if not batch:
            raise ValueError("give at least one of text_inputs, image_features, audio_inputs")
        return batch

    def apply(self, batch: dict[str, Any], *, train: bool = False, **kwargs: Any) -> Any:
        """``module.apply`` with this model's params."""
        return self.module.apply({"params": self.params}, batch, train=train, **kwargs)

    def __call__(
        self,
        text_inputs: str | Sequence[str] | None = None,
        image_features: np.ndarray | None = None,
        audio_inputs: np.ndarray | None = None,
        audio_sample_rate: int | None = None,
        *,
        normalize: bool = False,
    ) -> dict[str, Any]:
        """Runs the model on raw inputs (see the class docstring).

        With ``normalize=True`` the embeddings (``"text"``, ``"image"``, ``"audio"``,
        ``"fused"``: float32 ``[B, embed_dim]``) are divided by their L2 norm, as the
        contrastive losses compare them; other outputs are unchanged.
        """
        batch = self.preprocess(text_inputs, image_features, audio_inputs, audio_sample_rate)
        return self.run(batch, normalize=normalize)

    def run(self, batch: Mapping[str, Any], *, normalize: bool = False) -> dict[str, Any]:
        """Runs the model (jitted, in inference mode) on a batch from :meth:`preprocess`
        (``text`` int32 ``[B, T]``, ``text_mask`` bool ``[B, T]``, ``image`` float32
        ``[B, H, W, C]``, ``audio`` float32 ``[B, S]``) and returns the outputs as numpy
        arrays, as ``__call__`` does (``normalize`` as there). The batch is checked first.
        Each new batch shape compiles once; keep ``B`` fixed (pad the last batch) when
        running many batches.
        """
        batch = dict(batch)
        # Under jit the module sees traced ids and cannot check them: check the batch here.
        check_batch(batch, self.module.encoders)
        outputs = jax.tree.map(np.asarray, _jitted_apply(self.module, self.params, batch))
        if normalize:
            for key in EMBEDDING_KEYS:
                if key in outputs:
                    outputs[key] = l2_normalize(outputs[key])
        return outputs


def l2_normalize(x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """``x / max(||x||, eps)`` along the last axis: float32 ``[..., D]`` -> float32
    ``[..., D]`` (the normalisation of :func:`mmtx.losses.l2_normalize`, in numpy)."""
    x = np.asarray(x, np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, np.float32(eps))


def _text_list(text_inputs: Any) -> list[str]:
    """``text_inputs`` as a list of str: a str, or a list/tuple/numpy array of str."""
    if isinstance(text_inputs, np.ndarray) and text_inputs.ndim == 0:
        text_inputs = text_inputs.item()
    if isinstance(text_inputs, str):
        return [text_inputs]
    if isinstance(text_inputs, bytes | bytearray | np.bytes_):
        raise TypeError("text_inputs is bytes; decode it to str first (text.decode('utf-8'))")
    if not isinstance(text_inputs, list | tuple | np.ndarray):
        raise TypeError(
            f"text_inputs must be a str or a list of str; got {type(text_inputs).__name__}"
        )
    for index, text in enumerate(text_inputs):
        if isinstance(text, bytes | bytearray | np.bytes_):
            raise TypeError(
                f"text_inputs[{index}] is bytes; decode it to str first (text.decode('utf-8'))"
            )
        if not isinstance(text, str):
            raise TypeError(f"text_inputs[{index}] must be a str; got {type(text).__name__}")
    return [str(text) for text in text_inputs]


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


def init_params(
    module: MultiModalTransformer, config: ml_collections.ConfigDict, rng: jax.Array
) -> Any:
    """Initialises the (logically annotated, then unboxed) params of every encoder."""
    batch = dummy_batch(config, batch_size=1)
    variables = jax.jit(lambda r: module.init(r, batch, train=False))(rng)
    return nn.meta.unbox(variables["params"])


def dummy_batch(config: ml_collections.ConfigDict, batch_size: int) -> dict[str, jax.Array]:
    """A zero batch with every configured modality, shaped as the model expects."""
    model = config.model
    batch: dict[str, jax.Array] = {}
    if "text" in model.modalities:
        batch["text"] = jnp.ones((batch_size, model.text.max_length), jnp.int32)
        batch["text_mask"] = jnp.ones((batch_size, model.text.max_length), jnp.bool_)
    if "image" in model.modalities:
        size, channels = model.image.image_size, model.image.channels
        batch["image"] = jnp.zeros((batch_size, size, size, channels), jnp.float32)
    if "audio" in model.modalities:
        batch["audio"] = jnp.zeros((batch_size, model.audio.num_samples), jnp.float32)
    return batch


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
