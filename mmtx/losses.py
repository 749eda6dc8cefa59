"""Losses: contrastive (softmax / CLIP and sigmoid / SigLIP) and classification.

All losses are computed in float32 whatever the compute dtype.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping
from typing import Any

import chex
import jax
import jax.numpy as jnp
import optax

from mmtx.modalities import modality_names, present_key

MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clips the temperature at 100.


def capped_logit_scale(logit_scale: jax.Array) -> jax.Array:
    """``min(logit_scale, log 100)`` as float32, with the full gradient at the cap itself.

    CLIP (and open_clip) use ``exp(logit_scale)`` in the loss and clamp the parameter to
    ``[0, log 100]`` after each optimizer update; mmtx's train step clamps it the same way
    (:func:`mmtx.train.step.clamp_logit_scale`), so the cap here only bites on values set
    above it by hand (no gradient flows there). At ``logit_scale == log 100`` exactly, where
    imported CLIP checkpoints sit, ``jnp.minimum`` would split the gradient on the tie and
    halve it; the gradient there is the uncapped one, as in open_clip.
    """
    logit_scale = logit_scale.astype(jnp.float32)
    return jnp.where(logit_scale > MAX_LOGIT_SCALE, MAX_LOGIT_SCALE, logit_scale)


def l2_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    """``x / ||x||`` along the last axis, float32."""
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps * eps))


def pair_logits(a: jax.Array, b: jax.Array, logit_scale: jax.Array) -> jax.Array:
    """Scaled cosine similarities: ``a`` ``[B, D]``, ``b`` ``[B, D]`` -> float32 ``[B, B]``."""
    chex.assert_rank([a, b], 2)
    scale = jnp.exp(capped_logit_scale(logit_scale))
    return scale * l2_normalize(a) @ l2_normalize(b).T


def softmax_contrastive_loss(a: jax.Array, b: jax.Array, logit_scale: jax.Array) -> jax.Array:
    """CLIP loss (Radford et al. 2021): symmetric cross-entropy with the diagonal as targets.

    a, b: ``[B, D]`` embeddings of the same B examples; logit_scale: float scalar, the log
    inverse temperature (clipped at log 100). Returns a float32 scalar.
    """
    logits = pair_logits(a, b, logit_scale)
    labels = jnp.arange(logits.shape[0])
    a_to_b = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    b_to_a = optax.softmax_cross_entropy_with_integer_labels(logits.T, labels)
    return 0.5 * (jnp.mean(a_to_b) + jnp.mean(b_to_a))


def sigmoid_contrastive_loss(
    a: jax.Array, b: jax.Array, logit_scale: jax.Array, logit_bias: jax.Array
) -> jax.Array:
    """SigLIP loss (Zhai et al. 2023): every pair is a binary problem, positives on the diagonal.

    ``-sum_ij log sigmoid(z_ij * (t * a_i.b_j + bias)) / B`` with ``z = +1`` on the diagonal
    and ``-1`` elsewhere. Returns a float32 scalar.
    """
    logits = pair_logits(a, b, logit_scale) + logit_bias.astype(jnp.float32)
    signs = 2.0 * jnp.eye(logits.shape[0], dtype=jnp.float32) - 1.0
    return -jnp.sum(jax.nn.log_sigmoid(signs * logits)) / logits.shape[0]


def masked_softmax_contrastive_loss(
    a: jax.Array, b: jax.Array, logit_scale: jax.Array, valid: jax.Array
) -> jax.Array:
    """:func:`softmax_contrastive_loss` over the examples where ``valid`` (bool ``[B]``) holds:
    only valid pairs are rows, columns and negatives; 0 when none is valid. Equals the
    unmasked loss of the valid examples alone."""
    logits = pair_logits(a, b, logit_scale)
    valid = valid.astype(jnp.bool_)
    count = jnp.maximum(jnp.sum(valid.astype(jnp.float32)), 1.0)
    labels = jnp.arange(logits.shape[0])
    # Only valid pairs are scores; an invalid example's row (and column) keeps its diagonal
    # alone, at 0, so its cross-entropy is 0 and it is dropped from the mean below.
    pairs = valid[:, None] & valid[None, :]
    own = jnp.eye(logits.shape[0], dtype=jnp.bool_) & ~valid[:, None]
    masked = jnp.where(pairs, logits, jnp.where(own, 0.0, -jnp.inf))
    a_to_b = optax.softmax_cross_entropy_with_integer_labels(masked, labels)
    b_to_a = optax.softmax_cross_entropy_with_integer_labels(masked.T, labels)
    weight = valid.astype(jnp.float32)
    return 0.5 * (jnp.sum(a_to_b * weight) + jnp.sum(b_to_a * weight)) / count


def masked_sigmoid_contrastive_loss(
    a: jax.Array, b: jax.Array, logit_scale: jax.Array, logit_bias: jax.Array, valid: jax.Array
) -> jax.Array:
    """:func:`sigmoid_contrastive_loss` over the pairs whose two examples are ``valid`` (bool
    ``[B]``), divided by the number of valid examples; 0 when none is valid."""
    logits = pair_logits(a, b, logit_scale) + logit_bias.astype(jnp.float32)
    signs = 2.0 * jnp.eye(logits.shape[0], dtype=jnp.float32) - 1.0
    weight = valid.astype(jnp.float32)
    pairs = weight[:, None] * weight[None, :]
    count = jnp.maximum(jnp.sum(weight), 1.0)
    return -jnp.sum(pairs * jax.nn.log_sigmoid(signs * logits)) / count


def masked_classification_loss(
    logits: jax.Array, labels: jax.Array, valid: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """:func:`classification_loss` averaged over the examples where ``valid`` (bool ``[B]``)."""
    logits = logits.astype(jnp.float32)
    weight = valid.astype(jnp.float32)
    count = jnp.maximum(jnp.sum(weight), 1.0)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    hits = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return jnp.sum(losses * weight) / count, jnp.sum(hits * weight) / count


def presence(batch: Mapping[str, Any], modality: str) -> jax.Array | None:
    """bool ``[B]``: which examples of ``batch`` have ``modality`` (None: all of them)."""
    flag = batch.get(present_key(modality))
    return None if flag is None else jnp.asarray(flag).astype(jnp.bool_)


def classification_loss(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean softmax cross-entropy and accuracy: logits ``[B, C]``, labels int ``[B]``."""
    chex.assert_rank(logits, 2)
    chex.assert_shape(labels, (logits.shape[0],))
    logits = logits.astype(jnp.float32)
    loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
    accuracy = jnp.mean((jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32))
    return loss, accuracy


def total_loss(
    outputs: Mapping[str, Any], batch: Mapping[str, Any], config: Any
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The weighted training loss of one batch and its per-term metrics.

    Args:
      outputs: the model's output dict (per-modality embeddings, ``logits``, ``logit_scale``,
        ``logit_bias``).
      batch: the input batch (``label`` int32 ``[B]`` is used when present).
      config: ``config.loss`` with ``contrastive`` (``softmax`` | ``sigmoid`` | ``none``),
        ``contrastive_weight``, ``classification_weight``, ``attribute_weight`` and
        ``task_weight``.

    Returns:
      ``(loss, metrics)``: a float32 scalar and a dict of float32 scalars: one
      ``contrastive_<a>_<b>`` term per pair of present modalities, ``classification`` and
      ``accuracy`` when labels and logits are present, ``attribute_<modality>_<name>``
      (with its ``_accuracy``) for each auxiliary attribute head whose label the batch has,
      ``task_<name>`` (with its ``_accuracy``) for each ``model.tasks`` head whose label the
      batch has, and ``fusion_weight_<task>_<modality>``, each task's fusion weights.

    Per-example absence (``batch["present/<m>"]`` bool ``[B]``): a contrastive pair is
    computed over the examples that have both modalities, an attribute head over those that
    have its modality; without the flags the plain (unmasked) losses run.
    """
    metrics: dict[str, jax.Array] = {}
    loss = jnp.zeros((), jnp.float32)
    present = [m for m in modality_names() if m in outputs]
    if config.contrastive != "none" and config.contrastive_weight:
        for a, b in itertools.combinations(present, 2):
            flags = [f for f in (presence(batch, a), presence(batch, b)) if f is not None]
            valid = functools.reduce(jnp.logical_and, flags) if flags else None
            if config.contrastive == "softmax":
                if valid is None:
                    term = softmax_contrastive_loss(outputs[a], outputs[b], outputs["logit_scale"])
                else:
                    term = masked_softmax_contrastive_loss(
                        outputs[a], outputs[b], outputs["logit_scale"], valid
                    )
            elif config.contrastive == "sigmoid":
                scale, bias = outputs["logit_scale"], outputs["logit_bias"]
                if valid is None:
                    term = sigmoid_contrastive_loss(outputs[a], outputs[b], scale, bias)
                else:
                    term = masked_sigmoid_contrastive_loss(
                        outputs[a], outputs[b], scale, bias, valid
                    )
            else:
                raise ValueError(f"unknown config.loss.contrastive {config.contrastive!r}")
            metrics[f"contrastive_{a}_{b}"] = term
            loss = loss + config.contrastive_weight * term
    if "logits" in outputs and "label" in batch and config.classification_weight:
        term, accuracy = classification_loss(outputs["logits"], batch["label"])
        metrics["classification"] = term
        metrics["accuracy"] = accuracy
        loss = loss + config.classification_weight * term
    if config.get("attribute_weight", 0.0):
        for key, logits in outputs.get("attribute_logits", {}).items():
            modality, attribute = key.split("/")
            if attribute in batch:
                valid = presence(batch, modality)
                if valid is None:
                    term, accuracy = classification_loss(logits, batch[attribute])
                else:
                    term, accuracy = masked_classification_loss(logits, batch[attribute], valid)
                metrics[f"attribute_{key.replace('/', '_')}"] = term
                metrics[f"attribute_{key.replace('/', '_')}_accuracy"] = accuracy
                loss = loss + config.attribute_weight * term
    for key, logits in outputs.get("task_logits", {}).items():
        name, label = key.split("/")
        if label in batch:
            term, accuracy = classification_loss(logits, batch[label])
            metrics[f"task_{name}"] = term
            metrics[f"task_{name}_accuracy"] = accuracy
            loss = loss + config.get("task_weight", 1.0) * term
    for name, weights in outputs.get("task_fusion_weights", {}).items():
        for modality, weight in weights.items():
            metrics[f"fusion_weight_{name}_{modality}"] = weight.astype(jnp.float32)
    metrics["loss"] = loss
    return loss, metrics
