"""Zero-shot classification, as CLIP and open_clip compute it.

Each class name is written into every prompt template (``"a photo of a {}."``), the prompts
are embedded by the text tower, each embedding L2-normalised, the class's embeddings averaged
and the average normalised again: one column per class of a classifier ``[D, C]``
(:func:`zero_shot_classifier`, open_clip's ``build_zero_shot_classifier``). An image (or
audio clip) is classified by the cosine similarity of its normalised embedding to each column
(:func:`zero_shot_logits`); top-k accuracy counts the true class among the ``k`` highest
(:func:`top_k_accuracy`), ties broken by lower class index (a stable sort by descending
score).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mmtx.evaluate.retrieval import normalize

# ``embed_text(texts) -> float [len(texts), D]``: the text tower's (un-normalised) embeddings.
TextEmbedder = Callable[[Sequence[str]], np.ndarray]


def prompts(classnames: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Every template filled with every class name, class-major:
    ``[t.format(c) for c in classnames for t in templates]``."""
    for template in templates:
        if template.count("{}") != 1:
            raise ValueError(
                f"a template needs exactly one '{{}}' for the class name: {template!r}"
            )
    return [template.format(name) for name in classnames for template in templates]


def text_embedder(model_or_embed_text: Any, batch_size: int = 256) -> TextEmbedder:
    """``embed_text(texts) -> float32 [N, D]``: the text embeddings of a model with an
    ``encode_text(texts) -> [N, D]`` method (an :class:`mmtx.Model`), ``batch_size`` texts
    per call; any other callable is returned as it is. (The model is recognised by its
    method, so that this layer does not import the one that defines it.)"""
    encode_text = getattr(model_or_embed_text, "encode_text", None)
    if encode_text is None:
        if not callable(model_or_embed_text):
            raise TypeError("give an mmtx.Model or a function texts -> [N, D] embeddings")
        return model_or_embed_text

    def embed_text(texts: Sequence[str]) -> np.ndarray:
        rows = [
            encode_text(list(texts[start : start + batch_size]))
            for start in range(0, len(texts), batch_size)
        ]
        return np.concatenate(rows).astype(np.float32)

    return embed_text


def zero_shot_classifier(
    model_or_embed_text: Any, classnames: Sequence[str], templates: Sequence[str]
) -> np.ndarray:
    """The zero-shot classifier of ``classnames``: float32 ``[D, C]``, unit-norm columns.

    Args:
      model_or_embed_text: an :class:`mmtx.Model` with a text tower, or a function
        ``texts -> float [N, D]`` (the text embeddings, normalised or not).
      classnames: ``C`` human-readable names, in label order.
      templates: prompt templates, each with one ``{}`` for the name.

    Column ``c`` is ``normalize(mean_t(normalize(embed(template_t.format(name_c)))))``.
    """
    if not classnames or not templates:
        raise ValueError("zero-shot classification needs class names and templates")
    texts = prompts(classnames, templates)
    embeddings = np.asarray(text_embedder(model_or_embed_text)(texts))
    if embeddings.ndim != 2 or len(embeddings) != len(texts):
        raise ValueError(
            f"the text embedder returned {embeddings.shape} for {len(texts)} prompts; "
            "expected [prompts, D]"
        )
    per_class = normalize(embeddings).reshape(len(classnames), len(templates), -1)
    return normalize(per_class.mean(axis=1)).T.astype(np.float32)


def zero_shot_logits(embeddings: np.ndarray, classifier: np.ndarray) -> np.ndarray:
    """Cosine similarities float64 ``[N, C]`` of embeddings ``[N, D]`` (normalised here) to
    the classifier's columns ``[D, C]`` (CLIP scales them by ``logit_scale``, which changes no
    ranking)."""
    return normalize(embeddings) @ np.asarray(classifier, np.float64)


def top_k_accuracy(
    logits: np.ndarray, labels: np.ndarray, ks: tuple[int, ...] = (1, 5)
) -> dict[int, float]:
    """``{k: fraction of rows whose label is among its k highest logits}`` for ``logits``
    ``[N, C]`` and int ``labels`` ``[N]``. The label's position is the number of classes
    scoring strictly higher plus those scoring the same with a lower index (ties go to the
    lower class index)."""
    logits, labels = np.asarray(logits), np.asarray(labels, np.int64)
    if logits.ndim != 2 or len(logits) != len(labels):
        raise ValueError(f"logits {logits.shape} must be [N, C] with N = {len(labels)} labels")
    true = logits[np.arange(len(labels)), labels][:, None]
    before = np.arange(logits.shape[1])[None, :] < labels[:, None]
    ranks = (logits > true).sum(axis=1) + ((logits == true) & before).sum(axis=1)
    return {k: float(np.mean(ranks < k)) if len(labels) else 0.0 for k in ks}


def zero_shot_accuracy(
    embeddings: np.ndarray,
    labels: np.ndarray,
    classifier: np.ndarray,
    ks: tuple[int, ...] = (1, 5),
) -> dict[int, float]:
    """Top-k zero-shot accuracy ``{k: accuracy}`` of image (or audio) ``embeddings``
    ``[N, D]`` with int ``labels`` ``[N]`` under ``classifier`` ``[D, C]``
    (:func:`zero_shot_classifier`)."""
    return top_k_accuracy(zero_shot_logits(embeddings, classifier), labels, ks)
