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
from mmtx.data.tokenizer import Tokenizer, create_tokenizer
from mmtx.fusion import FUSION_MODULES, GatedFusion, ModalityFeatures
from mmtx.modalities import (
    LEGACY_FUSION_ORDER,
    fusion_order,
    get_modality,
    modality_names,
    present_key,
)
from mmtx.nn.attention import default_kernel_init
from mmtx.nn.platform import canonical_platform, target_platform

Dtype = Any


def embedding_keys() -> tuple[str, ...]:
    """The outputs that are embeddings ``[B, embed_dim]`` (``Model(..., normalize=True)``
    scales them): every registered modality's and ``"fused"``."""
    return (*modality_names(), "fused")


class NonFiniteOutputError(ValueError):
    """An embedding came out NaN or inf from finite inputs (:meth:`Model.run` checks the
    inputs first): the params hold non-finite values, or the computation overflowed."""


def check_finite_outputs(outputs: Mapping[str, Any], params: Any, dtype: str) -> None:
    """Raises :class:`NonFiniteOutputError` when an embedding output (float ``[B, D]``,
    :func:`embedding_keys`) of ``outputs`` holds NaN or inf, naming the output, the examples
    and the cause: the first non-finite leaf of ``params``, or an overflow in ``dtype``."""
    for key in embedding_keys():
        if key not in outputs:
            continue
        values = np.asarray(outputs[key])
        finite = np.isfinite(values.reshape(values.shape[0], -1)).all(axis=1)
        if finite.all():
            continue
        examples = np.flatnonzero(~finite).tolist()
        shown = f"{examples[:8]}{' ...' if len(examples) > 8 else ''}"
        bad_params = [
            jax.tree_util.keystr(path)
            for path, leaf in jax.tree_util.tree_leaves_with_path(params)
            if not np.isfinite(np.asarray(leaf, np.float32)).all()
        ]
        cause = (
            f"the params hold NaN or inf ({len(bad_params)} arrays, first {bad_params[0]})"
            if bad_params
            else f"the params and inputs are finite, so the {dtype} computation overflowed"
        )
        raise NonFiniteOutputError(
            f"the {key} embedding of example(s) {shown} is NaN or inf: {cause}"
        )


def task_classes(config: ml_collections.ConfigDict, label: str) -> int:
    """Classes of a task head over batch key ``label``: ``model.num_classes`` for
    ``"label"``, else ``model.attribute_classes[label]``."""
    if label == "label":
        return int(config.model.num_classes)
    return int(config.model.attribute_classes[label])


def resolve_dtype(name: str, platform: str | None = None) -> jnp.dtype:
    """``"auto"`` is bfloat16 on TPU/GPU and float32 on CPU; other names map to jnp dtypes.

    ``platform``: the platform the model is compiled for (``cpu`` | ``gpu`` | ``tpu``;
    default :func:`mmtx.nn.platform.target_platform`, jax's backend outside a compile for
    other devices).
    """
    if name == "auto":
        platform = target_platform() if platform is None else canonical_platform(platform)
        return jnp.float32 if platform == "cpu" else jnp.bfloat16
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

    ``batch`` is the dict of docs/design.md (per modality its input, e.g. ``text`` int
    ``[B, T]`` with ``text_mask`` bool ``[B, T]``, ``image`` float ``[B, H, W, C]``,
    ``audio`` float ``[B, S]`` with optionally ``audio_length`` int ``[B]`` in ``[0, S]``,
    ``video`` float ``[B, T, H, W, C]``; optionally
    ``present/<modality>`` bool ``[B]``); ``encoders`` is
    :attr:`MultiModalTransformer.encoders`. Checked: every modality has an encoder, at
    least one is present, batch sizes agree and are nonzero, presence flags are ``[B]``; and
    on concrete values (not under jit, which traces them): each modality's own checks
    (:meth:`mmtx.modalities.ModalitySpec.check_values`: text ids in ``[0, vocab_size)``,
    finite pixels and samples, audio lengths within the clip) on the examples that have
    it, and every example has at least one modality. Raises ``ValueError`` (``TypeError``
    for non-integer ids or lengths) before anything is compiled. Returns the present
    modalities in registry order.
    """
    names = modality_names()
    present = [m for m in names if m in batch and batch[m] is not None]
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
    size = next(iter(sizes.values()))
    if size == 0:
        raise ValueError("the batch is empty (batch size 0)")
    flags: dict[str, np.ndarray | None] = {}
    for modality in present:
        key = present_key(modality)
        if key not in batch:
            continue
        if np.shape(batch[key]) != (size,):
            raise ValueError(f"{key} must be bool [{size}]; got shape {np.shape(batch[key])}")
        flags[modality] = _concrete(batch[key])
    for key in batch:
        if key.startswith("present/") and key.split("/", 1)[1] not in present:
            raise ValueError(f"batch has {key} but no {key.split('/', 1)[1]} input")
    for modality in present:
        spec = get_modality(modality)
        values = {k: _concrete(batch[k]) for k in (modality, *spec.extra_keys) if k in batch}
        if any(v is None for v in values.values()):
            continue
        rows = flags.get(modality)
        if rows is not None:
            if not rows.any():
                continue
            for key, value in values.items():  # rows are picked by the flags' [B]
                if value.shape[:1] != (size,):
                    raise ValueError(
                        f"{key} must have the batch size {size} first; got shape {value.shape}"
                    )
            values = {k: v[rows.astype(bool)] for k, v in values.items()}
        spec.check_values(values, encoders[modality])
    if flags and all(f is not None for f in flags.values()):
        covered = np.zeros((size,), bool)
        for modality in present:
            flag = flags.get(modality)
            covered |= True if flag is None else flag.astype(bool)
        if not covered.all():
            raise ValueError(
                f"example {int(np.argmin(covered))} has no modality present (every "
                "present/<modality> flag is False)"
            )
    return present


class MultiModalTransformer(nn.Module):
    """Encoders for each configured modality, a fusion module, and output heads.

    Build it with :meth:`from_config`. With ``modality_dropout > 0`` and ``train=True``, each
    example drops each modality from the fusion with that probability (never all of them; the
    per-modality embeddings are unaffected), so the model learns to cope with missing inputs.

    ``__call__(batch, train=...)`` takes a batch dict
    (any subset of the registered modalities' inputs, ``text``/``text_mask``/``image``/
    ``audio``/``audio_length``/``video``; see docs/design.md) and returns a
    dict with, for every present modality ``m``, ``out[m]`` float32 ``[B, embed_dim]``;
    ``"fused"`` float32 ``[B, embed_dim]`` (embeddings un-normalised: the losses L2-normalise
    them; absent with ``fusion_type="none"``, which has no fusion); ``"logits"`` float32
    ``[B, num_classes]`` when ``num_classes > 0``; ``"logit_scale"`` and ``"logit_bias"``
    float32 scalars (the learnable temperature and bias of the contrastive losses); with
    ``attribute_heads``, ``"attribute_logits"``: ``"<modality>/<attribute>"`` -> float32
    ``[B, classes]``, predicted from that modality's embedding; with gated fusion,
    ``"fusion_weights"``: present modality -> float32 scalar weight; with ``tasks``
    (``"<task>/<label>"`` -> classes), ``"task_logits"``: that key -> float32
    ``[B, classes]`` from the task's own gated fusion of the modality embeddings, and
    ``"task_fusion_weights"``: task -> present modality -> float32 scalar weight. With
    ``capture_weights``, ``"intermediates"``: modality -> that encoder's ``out`` and
    ``"fusion"`` -> the fusion's ``out`` (without their ``[B, T, D]`` token arrays), which
    hold the attention probabilities as ``"attention_weights"`` (see :mod:`mmtx.encoders`,
    :mod:`mmtx.fusion`).

    Per-example absence: ``batch["present/<m>"]`` bool ``[B]`` (False = the example has no
    ``m``; its ``m`` input is a filler of the right shape). Such an example is fused exactly
    as if ``m`` were absent (``ModalityFeatures.keep``) and its ``out[m]`` is zero; the
    losses skip it (:func:`mmtx.losses.total_loss`).

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
    tasks: FrozenDict[str, int] = FrozenDict()
    fusion_order: tuple[str, ...] = LEGACY_FUSION_ORDER
    temperature_init: float = 0.07
    logit_bias_init: float = -10.0
    capture_weights: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @classmethod
    def from_config(
        cls,
        config: ml_collections.ConfigDict,
        vocab_size: int,
        *,
        platform: str | None = None,
        **overrides: Any,
    ) -> MultiModalTransformer:
        """Builds the module from a validated config; ``vocab_size`` comes from the tokenizer.

        ``platform`` (``cpu`` | ``gpu`` | ``tpu``): the platform the module will be compiled
        for, which resolves ``config.dtype = "auto"`` (:func:`resolve_dtype`; default jax's
        backend). :func:`mmtx.train.build.build` passes its mesh's.

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
            # auto | xla | cudnn | pallas, resolved per layer (mmtx.nn.resolve_implementation).
            attention_implementation=config.attention.get("implementation", "auto"),
        )

        def attention_options(kernel: str) -> FrozenDict:
            return FrozenDict(config.attention[kernel].to_dict() if kernel != "dense" else {})

        encoders, projections = {}, {}
        for modality in model.modalities:
            spec = get_modality(modality)
            kwargs = {**spec.encoder_fields(model[modality], vocab_size), **common}
            projections[modality] = model[modality].projection
            kwargs["attention_options"] = attention_options(kwargs["attention"])
            kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
            encoders[modality] = kwargs
        fusion_type = config.fusion.type
        fusion = {
            **config.fusion.to_dict(),
            **common,
            "attention_options": attention_options(config.fusion.attention),
            "cross_attention_options": attention_options(config.fusion.cross_attention),
            "modalities": fusion_order(model.modalities),
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
            tasks=FrozenDict(
                {
                    f"{name}/{label}": task_classes(config, label)
                    for name, label in model.tasks.items()
                }
            ),
            fusion_order=fusion_order(model.modalities),
            temperature_init=model.temperature_init,
            logit_bias_init=model.logit_bias_init,
            dtype=resolve_dtype(config.dtype, platform),
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
            spec = get_modality(modality)
            encoder = spec.encoder_class()(**self.encoders[modality], **common, name=modality)
            tokens, out = spec.encode(encoder, batch, train=train)
            flag = batch.get(present_key(modality))
            keep = None if flag is None else jnp.asarray(flag).astype(jnp.bool_)
            features[modality] = ModalityFeatures(tokens, out["mask"], out["pooled"], keep)
            if self.capture_weights:  # the encoder's intermediates, less its token arrays
                outputs.setdefault("intermediates", {})[modality] = _small_outputs(out)
            embedding = self._projection(modality, out["pooled"])
            if keep is not None:  # an absent example's embedding is zero, not its filler's
                embedding = jnp.where(keep[:, None], embedding, 0.0)
            outputs[modality] = embedding
            for name, classes in self.attribute_heads.get(modality, {}).items():
                head = self._head(f"{modality}_{name}_head", classes)
                outputs.setdefault("attribute_logits", {})[f"{modality}/{name}"] = head(
                    outputs[modality]
                )

        if self.fusion_type != config_lib.NO_FUSION:
            self._fuse(features, outputs, train=train)
        for key, classes in self.tasks.items():
            self._task(key, classes, features, outputs)
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
            batch = next(iter(features.values())).tokens.shape[0]
            flags = [f.keep for f in features.values()]
            if all(flag is None for flag in flags):
                keep = self._modality_keep_mask(len(features), batch)
            else:
                present = jnp.stack(
                    [jnp.ones((batch,), jnp.bool_) if f is None else f for f in flags], axis=1
                )
                keep = self._modality_keep_mask(len(features), batch, present)
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

    def _modality_keep_mask(
        self, num_modalities: int, batch: int, present: jax.Array | None = None
    ) -> jax.Array:
        """bool ``[B, M]``: each modality kept with prob ``1 - modality_dropout``, at least one
        per example (a random one when all were dropped). With ``present`` (bool ``[B, M]``,
        the batch's presence flags) only present modalities are kept or rescued."""
        drop_rng, pick_rng = jax.random.split(self.make_rng("dropout"))
        keep = jax.random.bernoulli(drop_rng, 1.0 - self.modality_dropout, (batch, num_modalities))
        if present is None:
            pick = jax.random.randint(pick_rng, (batch,), 0, num_modalities)
        else:
            keep = keep & present
            scores = jax.random.uniform(pick_rng, (batch, num_modalities))
            pick = jnp.argmax(jnp.where(present, scores, -1.0), axis=1)
        rescue = jax.nn.one_hot(pick, num_modalities, dtype=bool)
        return jnp.where(jnp.any(keep, axis=1, keepdims=True), keep, rescue)

    def _task(
        self,
        key: str,
        classes: int,
        features: dict[str, ModalityFeatures],
        outputs: dict[str, Any],
    ) -> None:
        """One downstream task's own fusion (``key`` is ``"<task>/<label>"``): a
        :class:`mmtx.fusion.GatedFusion` of the modality embeddings (its learned weights are
        the task's, param ``task_<task>_fusion``) and a linear head (``task_<task>_head``);
        adds ``outputs["task_logits"][key]`` float32 ``[B, classes]`` and
        ``outputs["task_fusion_weights"][task]``: modality -> float32 scalar weight."""
        name = key.split("/")[0]
        embeddings = {
            m: ModalityFeatures(f.tokens, f.mask, outputs[m], f.keep) for m, f in features.items()
        }
        fusion = GatedFusion(
            width=self.embed_dim,
            modalities=self.fusion_order,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name=f"task_{name}_fusion",
        )
        fused, out = fusion(embeddings)
        logits = self._head(f"task_{name}_head", classes)(fused)
        outputs.setdefault("task_logits", {})[key] = logits
        outputs.setdefault("task_fusion_weights", {})[name] = out["weights"]

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


def init_params(
    module: MultiModalTransformer, config: ml_collections.ConfigDict, rng: jax.Array
) -> Any:
    """Initialises the (logically annotated, then unboxed) params of every encoder."""
    batch = dummy_batch(config, batch_size=1)
    variables = jax.jit(lambda r: module.init(r, batch, train=False))(rng)
    return nn.meta.unbox(variables["params"])


def dummy_batch(config: ml_collections.ConfigDict, batch_size: int) -> dict[str, jax.Array]:
    """A zero batch with every configured modality, shaped as the model expects (each
    modality's :meth:`mmtx.modalities.ModalitySpec.dummy_input`)."""
    batch: dict[str, jax.Array] = {}
    for modality in config.model.modalities:
        batch.update(get_modality(modality).dummy_input(config.model[modality], batch_size))
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
