"""Evaluation over a whole split from a predict function: accuracy, cross-modal retrieval
recall and the evaluators of :mod:`mmtx.evaluate.evaluators` (zero-shot classification,
retrieval with every caption).

A predict function is ``(params, batch) -> outputs``: the global batch (arrays ``[B, ...]``
as :func:`mmtx.data.pipeline.create_dataset` yields them, placed by ``to_global``) in, the
model's float outputs out: pooled embeddings ``[B, D]`` per modality, ``"logits"``
``[B, C]`` with a classifier, ``"task_logits"`` ``{task: [B, C_task]}`` (the jitted eval step
of :func:`mmtx.train.build.build`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from mmtx.data.pipeline import ATTRIBUTE_KEYS, modality_attributes
from mmtx.data.tokenizer import Tokenizer
from mmtx.evaluate.evaluators import EvalTasks, evaluate_tasks, non_text_modalities
from mmtx.evaluate.retrieval import retrieval_recall

# ``predict(params, global batch) -> outputs`` (see the module docstring).
PredictFn = Callable[[Any, dict[str, Any]], dict[str, Any]]
# This process's share of a batch (numpy) -> global arrays (``Run.to_global``).
ToGlobal = Callable[[dict[str, np.ndarray]], dict[str, jax.Array]]


def retrieval_directions() -> tuple[tuple[str, str], ...]:
    """(query, gallery) pairs evaluated: text to and from every other registered modality;
    reported as ``<query>_to_<gallery>_recall@k``."""
    return tuple(pair for m in non_text_modalities() for pair in (("text", m), (m, "text")))


def pad_batch(batch: dict[str, np.ndarray], size: int) -> tuple[dict[str, np.ndarray], int]:
    """Zero-pads every array's leading axis to ``size``; returns (padded, real count)."""
    count = len(next(iter(batch.values())))
    if count == size:
        return batch, count
    padded = {
        k: np.concatenate([v, np.zeros((size - count, *v.shape[1:]), v.dtype)])
        for k, v in batch.items()
    }
    if "text_mask" in padded:
        padded["text_mask"][count:, 0] = True  # a padded row must attend somewhere
    return padded, count


def attribute_keys(columns: dict[str, np.ndarray], attributes: tuple[str, ...]) -> np.ndarray:
    """One int per example combining the named attribute columns (``[N]`` int64)."""
    key = np.zeros(len(next(iter(columns.values()))), np.int64)
    for name in attributes:
        key = key * 1000 + columns[name].astype(np.int64)
    return key


def text_embedder(
    predict: PredictFn,
    params: Any,
    tokenizer: Tokenizer,
    max_length: int,
    *,
    local_batch_size: int,
    to_global: ToGlobal,
) -> Callable[[Sequence[str]], np.ndarray]:
    """``embed_text(texts) -> float [len(texts), D]``: the text embeddings of ``predict``
    (the loop's jitted, sharded eval step), in order.

    Every process must call it with the same texts: each chunk of ``local_batch_size x
    processes`` texts is split into contiguous per-process slices (padded to the local batch),
    so every process runs the same number of steps and the gathered rows keep their order.
    """

    def embed_text(texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        count, index = jax.process_count(), jax.process_index()
        chunk_size = local_batch_size * count
        rows = []
        for start in range(0, len(texts), chunk_size):
            chunk = texts[start : start + chunk_size]
            mine = chunk[index * local_batch_size : (index + 1) * local_batch_size]
            if mine:
                ids, mask = tokenizer(mine, max_length)
            else:
                ids = np.zeros((0, max_length), np.int32)
                mask = np.zeros((0, max_length), bool)
            mask = np.array(mask, copy=True)
            mask[~mask.any(axis=1), 0] = True  # an empty text must attend somewhere
            padded, _ = pad_batch({"text": np.asarray(ids), "text_mask": mask}, local_batch_size)
            outputs = predict(params, to_global(padded))
            gathered = multihost_utils.process_allgather(outputs["text"], tiled=True)
            rows.append(np.asarray(gathered)[: len(chunk)])
        return np.concatenate(rows) if rows else np.zeros((0, 0), np.float32)

    return embed_text


def evaluate(
    predict: PredictFn,
    params: Any,
    batches: Iterable[dict[str, np.ndarray]],
    *,
    local_batch_size: int,
    to_global: ToGlobal,
    tasks: EvalTasks | None = None,
    embed_text: Callable[[Sequence[str]], np.ndarray] | None = None,
) -> dict[str, float]:
    """Runs ``predict`` over every batch and computes the split's metrics.

    Returns float metrics: ``accuracy`` and ``classification`` (cross-entropy) when the
    model has a classifier and the data labels; ``task_<task>_accuracy`` for each
    ``model.tasks`` head whose label the data has; ``<a>_to_<b>_recall@{1,5}`` for each
    direction of :func:`retrieval_directions` whose modalities are present (over the examples
    that have both, by their ``present/<m>`` flags), where a hit is a
    retrieved item with the same attributes that both modalities express (the example itself
    when the data has no attributes); and ``num_examples``.

    With ``tasks`` (:func:`mmtx.evaluate.evaluators.eval_tasks`) and ``embed_text``
    (:func:`text_embedder`), also the metrics of
    :func:`mmtx.evaluate.evaluators.evaluate_tasks`: ``<m>_zero_shot_top{1,5}``; and when
    the split has several captions per example, the text<->image/audio recalls over every
    caption, which replace the first-caption ones of the same names (``num_captions`` counts
    the captions; the batches must carry ``index``).
    """
    data = predict_split(predict, params, batches, local_batch_size, to_global)
    metrics: dict[str, float] = {"num_examples": float(len(next(iter(data.values()))))}
    metrics.update(classification_metrics(data))
    metrics.update(retrieval_metrics(data))
    if tasks is not None and embed_text is not None:
        metrics.update(evaluate_tasks(tasks, embed_text, data))
    return metrics


def predict_split(
    predict: PredictFn,
    params: Any,
    batches: Iterable[dict[str, np.ndarray]],
    local_batch_size: int,
    to_global: ToGlobal,
) -> dict[str, np.ndarray]:
    """``predict``'s outputs (``task_logits/<task>`` for each task head) beside the labels
    (``label``, ``index``, the attributes, ``present/<m>``) of every example of ``batches``,
    gathered from every process, padding dropped: columns ``[N, ...]`` in split order."""
    collected: dict[str, list[np.ndarray]] = {}
    for local in batches:
        padded, count = pad_batch(local, local_batch_size)
        outputs = predict(params, to_global(padded))
        tasks_out = {f"task_logits/{k}": v for k, v in outputs.get("task_logits", {}).items()}
        outputs = {k: v for k, v in {**outputs, **tasks_out}.items() if np.ndim(v) >= 1}
        labels = {
            k: v
            for k, v in padded.items()
            if k in ("label", "index") or k in ATTRIBUTE_KEYS or k.startswith("present/")
        }
        labels["valid"] = np.arange(local_batch_size) < count
        columns = multihost_utils.process_allgather({**outputs, **labels}, tiled=True)
        valid = np.asarray(columns.pop("valid"))
        for name, value in columns.items():
            collected.setdefault(name, []).append(np.asarray(value)[valid])
    return {k: np.concatenate(v) for k, v in collected.items()}


def classification_metrics(data: Mapping[str, np.ndarray]) -> dict[str, float]:
    """``accuracy`` and ``classification`` (mean cross-entropy, float64) of ``logits``
    ``[N, C]`` against int ``label`` ``[N]``, and ``task_<task>_accuracy`` of each
    ``task_logits/<task>`` whose label column is present."""
    metrics: dict[str, float] = {}
    if "logits" in data and "label" in data:
        logits = data["logits"].astype(np.float64)
        labels = data["label"]
        log_probs = logits - logits.max(1, keepdims=True)
        log_probs -= np.log(np.exp(log_probs).sum(1, keepdims=True))
        metrics["accuracy"] = float(np.mean(np.argmax(logits, 1) == labels))
        metrics["classification"] = float(-np.mean(log_probs[np.arange(len(labels)), labels]))
    for key in [k for k in data if k.startswith("task_logits/")]:
        task, label = key.split("/")[1:]
        if label in data:
            hits = np.argmax(data[key], axis=1) == data[label]
            metrics[f"task_{task}_accuracy"] = float(np.mean(hits))
    return metrics


def retrieval_metrics(data: Mapping[str, np.ndarray]) -> dict[str, float]:
    """``<query>_to_<gallery>_recall@{1,5}`` for each direction of
    :func:`retrieval_directions` whose embeddings ``[N, D]`` are in ``data``, over the
    examples that have both modalities; a hit shares the attributes both express."""
    metrics: dict[str, float] = {}
    expressed = modality_attributes()
    for query, gallery in retrieval_directions():
        if query not in data or gallery not in data:
            continue
        shared = tuple(
            a for a in expressed.get(query, ()) if a in expressed.get(gallery, ()) and a in data
        )
        keys = attribute_keys(data, shared) if shared else np.arange(len(data[query]))
        # Only the examples that have both modalities take part (present/<m> flags).
        both = np.ones(len(keys), bool)
        for modality in (query, gallery):
            if f"present/{modality}" in data:
                both &= data[f"present/{modality}"].astype(bool)
        if not both.any():
            continue
        recalls = retrieval_recall(data[query][both], data[gallery][both], keys[both], keys[both])
        for k, value in recalls.items():
            metrics[f"{query}_to_{gallery}_recall@{k}"] = value
    return metrics
