"""The multi-modal Flax module: encoders -> fusion -> heads (:class:`MultiModalTransformer`),
what it needs (dtype resolution, task head sizes, its embedding outputs and their finiteness
check) and how to initialise its params (:func:`init_params`, :func:`dummy_batch`).

The user-facing :class:`mmtx.Model` and :func:`mmtx.create_model` live in
:mod:`mmtx.inference`; the checks on a batch, in :mod:`mmtx.batch_checks`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax.core import FrozenDict

from mmtx import config as config_lib
from mmtx.batch_checks import check_batch
from mmtx.fusion import FUSION_MODULES, GatedFusion, ModalityFeatures
from mmtx.modalities import (
    LEGACY_FUSION_ORDER,
    fusion_order,
    get_modality,
    modality_names,
    present_key,
)
from mmtx.model_checks import check_runnable
from mmtx.nn.attention import default_kernel_init
from mmtx.nn.platform import canonical_platform, target_platform

Dtype = Any


def embedding_keys() -> tuple[str, ...]:
    """The outputs that are embeddings ``[B, embed_dim]`` (``mmtx.Model(..., normalize=True)``
    scales them): every registered modality's and ``"fused"``."""
    return (*modality_names(), "fused")


class NonFiniteOutputError(ValueError):
    """An embedding came out NaN or inf from finite inputs (:meth:`mmtx.Model.run` checks the
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
        table would make XLA read clipped rows for the ids past it (``ValueError``). What
        only the code can answer is checked here too, before anything is traced
        (:func:`mmtx.model_checks.check_runnable`: a registered ``fusion.type``, an
        ``attention.implementation`` that ``platform`` can run).
        """
        check_runnable(config, platform)
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
