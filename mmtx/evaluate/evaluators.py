"""The evaluators the training loop runs besides its per-example metrics: zero-shot
classification of the eval split and retrieval with all of its captions.

:func:`eval_tasks` reads what the eval data offers for them (class names, every caption) once;
:func:`evaluate_tasks` computes the metrics from the split's embeddings and a text embedder
(``texts -> [N, D]``: the loop's jitted, sharded eval step, or an :class:`mmtx.Model`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np

from mmtx.data.pipeline import create_source, eval_captions, eval_class_names
from mmtx.evaluate.retrieval import caption_retrieval
from mmtx.evaluate.zero_shot import (
    TextEmbedder,
    text_embedder,
    zero_shot_accuracy,
    zero_shot_classifier,
)
from mmtx.modalities import modality_names


def non_text_modalities() -> tuple[str, ...]:
    """Modalities classified zero-shot and retrieved against every caption: every
    registered modality but text."""
    return tuple(m for m in modality_names() if m != "text")


@dataclasses.dataclass(frozen=True)
class EvalTasks:
    """What the eval split offers beyond per-example metrics.

    ``classnames``/``templates``: zero-shot classification of labels ``0..C-1`` (empty: none).
    ``captions``: every caption of the split, ``caption_examples`` int64 ``[M]`` the split
    position of the example each describes (empty/None: one caption per example).
    """

    classnames: tuple[str, ...] = ()
    templates: tuple[str, ...] = ()
    captions: tuple[str, ...] = ()
    caption_examples: np.ndarray | None = None


def eval_tasks(config: ml_collections.ConfigDict, source: Any = None) -> EvalTasks:
    """The tasks ``config`` asks for and its eval data (``source``, default: the configured
    eval split) supports: zero-shot when ``config.eval.zero_shot``, the model has a text tower
    and an image or audio tower, and the labels have names (:func:`mmtx.data.pipeline.
    eval_class_names`); all captions when :func:`mmtx.data.pipeline.eval_captions` finds
    several per example."""
    modalities = tuple(config.model.modalities)
    if "text" not in modalities:
        return EvalTasks()
    zero_shot = config.eval.zero_shot and any(m in modalities for m in non_text_modalities())
    source = create_source(config, "eval") if source is None else source
    classnames = eval_class_names(config, source) if zero_shot else ()
    captions = eval_captions(config, source)
    return EvalTasks(
        classnames=tuple(classnames),
        templates=tuple(config.eval.zero_shot_templates) if classnames else (),
        captions=tuple(captions[0]) if captions else (),
        caption_examples=captions[1] if captions else None,
    )


def zero_shot_metrics(
    classifier: np.ndarray,
    data: Mapping[str, np.ndarray],
    ks: tuple[int, ...] = (1, 5),
) -> dict[str, float]:
    """``<modality>_zero_shot_top<k>`` for each of ``data``'s image/audio embeddings
    (``[N, D]``) against ``data["label"]`` (int ``[N]``) under ``classifier`` ``[D, C]``."""
    labels = np.asarray(data["label"])
    num_classes = classifier.shape[1]
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"zero-shot: {num_classes} class names but labels range over "
            f"[{labels.min()}, {labels.max()}]; set config.eval.classnames (one per label)"
        )
    metrics = {}
    for modality in non_text_modalities():
        if modality in data:
            accuracy = zero_shot_accuracy(data[modality], labels, classifier, ks)
            metrics.update({f"{modality}_zero_shot_top{k}": v for k, v in accuracy.items()})
    return metrics


def evaluate_tasks(
    tasks: EvalTasks,
    model_or_embed_text: Any,
    data: Mapping[str, np.ndarray],
    ks: tuple[int, ...] = (1, 5),
) -> dict[str, float]:
    """The zero-shot and all-caption metrics of one evaluation.

    Args:
      tasks: from :func:`eval_tasks`.
      model_or_embed_text: an :class:`mmtx.Model`, or ``texts -> float [N, D]`` text
        embeddings.
      data: the split's columns: ``image`` / ``audio`` float ``[N, D]`` embeddings,
        ``label`` int ``[N]`` (zero-shot), ``index`` int ``[N]`` (each row's split position;
        all-caption retrieval).
      ks: the top-k / recall cut-offs.

    Returns:
      ``image_zero_shot_top<k>`` / ``audio_zero_shot_top<k>`` (when ``tasks.classnames`` and
      labels); with ``tasks.captions``, ``<m>_to_text_recall@k`` and ``text_to_<m>_recall@k``
      of :func:`mmtx.evaluate.retrieval.caption_retrieval` for each of image and audio, and
      ``num_captions``.
    """
    metrics: dict[str, float] = {}
    present = [m for m in non_text_modalities() if m in data]
    if not present:
        return metrics
    embed_text: TextEmbedder = text_embedder(model_or_embed_text)
    if tasks.classnames and "label" in data:
        classifier = zero_shot_classifier(embed_text, tasks.classnames, tasks.templates)
        metrics.update(zero_shot_metrics(classifier, data, ks))
    if tasks.captions:
        if "index" not in data:
            raise ValueError(
                "retrieval with all captions needs each eval row's split position ('index': "
                "create_dataset(..., with_index=True))"
            )
        index = np.asarray(data["index"], np.int64)
        row_of = np.full(int(max(index.max(), tasks.caption_examples.max())) + 1, -1)
        row_of[index] = np.arange(len(index))
        caption_rows = row_of[tasks.caption_examples]
        if (caption_rows < 0).any():
            raise ValueError("some captions describe examples that the evaluation did not see")
        captions = np.asarray(embed_text(list(tasks.captions)))
        for modality in present:
            metrics.update(
                caption_retrieval(data[modality], captions, caption_rows, ks, modality=modality)
            )
        metrics["num_captions"] = float(len(tasks.captions))
    return metrics
