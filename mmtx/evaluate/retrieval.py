"""Cross-modal retrieval recall@k, also with several captions per image (COCO / Flickr30k).

Every gallery is ranked by cosine similarity to the query (both L2-normalised, compared in
float64). A query has one or more *positives* in the gallery (the items with its key) and is a
hit at ``k`` when any positive is among the first ``k`` of the ranking.

Ties are broken by gallery index, lower first, as a stable sort by descending similarity
orders them: the position of gallery item ``j`` for a query is the number of items scoring
strictly higher plus the number scoring the same with a lower index. So a positive tied with
a negative ranks ahead of it only when its index is lower, and the result does not depend on
the sort algorithm or the block size.

The COCO / Flickr30k protocol (:func:`caption_retrieval`): image -> text is a hit when any of
the image's captions is in the top ``k``; text -> image takes every caption as a query
against all images, its own image the only positive.
"""

from __future__ import annotations

import numpy as np

# Queries ranked at a time: bounds the [block, gallery] similarity matrix held in memory.
BLOCK_SIZE = 1024


def normalize(embeddings: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm (a zero row stays zero), float64 ``[N, D]``."""
    embeddings = np.asarray(embeddings, np.float64)
    norms = np.linalg.norm(embeddings, axis=-1, keepdims=True)
    return embeddings / np.maximum(norms, 1e-12)


def first_positive_ranks(
    queries: np.ndarray,
    gallery: np.ndarray,
    query_keys: np.ndarray,
    gallery_keys: np.ndarray,
    *,
    block_size: int = BLOCK_SIZE,
) -> np.ndarray:
    """For each query, the 0-based position of its best-ranked positive in the gallery.

    Args:
      queries: float ``[N, D]``; gallery: float ``[M, D]`` (normalised here).
      query_keys: int ``[N]``; gallery_keys: int ``[M]``. Gallery item ``j`` is a positive of
        query ``i`` when ``gallery_keys[j] == query_keys[i]``.
      block_size: queries ranked at a time (memory ``block_size * M`` floats; any value gives
        the same result).

    Returns:
      int64 ``[N]``: the position of the query's first positive when the gallery is sorted by
      descending cosine similarity, ties by lower index (see the module docstring); ``M``
      for a query without positives.
    """
    queries, gallery = normalize(queries), normalize(gallery)
    query_keys, gallery_keys = np.asarray(query_keys), np.asarray(gallery_keys)
    if len(queries) != len(query_keys) or len(gallery) != len(gallery_keys):
        raise ValueError(
            f"{len(queries)} queries with {len(query_keys)} keys, {len(gallery)} gallery "
            f"items with {len(gallery_keys)} keys: need one key per item"
        )
    size = len(gallery)
    index = np.arange(size)
    ranks = np.full(len(queries), size, np.int64)
    for start in range(0, len(queries), block_size):
        scores = queries[start : start + block_size] @ gallery.T  # [b, M]
        positive = query_keys[start : start + block_size, None] == gallery_keys[None, :]
        found = positive.any(axis=1)
        best = np.where(positive, scores, -np.inf).max(axis=1, initial=-np.inf)[:, None]
        # The lowest-index positive that reaches the best positive score.
        first = np.argmax(positive & (scores == best), axis=1)[:, None]
        higher = (scores > best).sum(axis=1)
        tied_before = ((scores == best) & (index[None, :] < first)).sum(axis=1)
        ranks[start : start + block_size] = np.where(found, higher + tied_before, size)
    return ranks


def recall_at_k(ranks: np.ndarray, ks: tuple[int, ...] = (1, 5)) -> dict[int, float]:
    """``{k: fraction of ranks < k}`` for int ``ranks`` ``[N]`` of :func:`first_positive_ranks`."""
    ranks = np.asarray(ranks)
    return {k: float(np.mean(ranks < k)) if len(ranks) else 0.0 for k in ks}


def retrieval_recall(
    queries: np.ndarray,
    gallery: np.ndarray,
    query_keys: np.ndarray,
    gallery_keys: np.ndarray,
    ks: tuple[int, ...] = (1, 5),
) -> dict[int, float]:
    """Recall@k of cosine-similarity retrieval: a query is a hit at ``k`` when any gallery item
    with its key (e.g. the same attributes, or the same example id) is among its ``k`` nearest,
    ties by lower gallery index.

    Args:
      queries: float ``[N, D]``; gallery: float ``[M, D]``.
      query_keys: int ``[N]``; gallery_keys: int ``[M]``.

    Returns:
      ``{k: recall}`` with recalls in ``[0, 1]``.
    """
    return recall_at_k(first_positive_ranks(queries, gallery, query_keys, gallery_keys), ks)


def caption_retrieval(
    items: np.ndarray,
    captions: np.ndarray,
    caption_items: np.ndarray,
    ks: tuple[int, ...] = (1, 5),
    *,
    modality: str = "image",
) -> dict[str, float]:
    """Retrieval between items (images, audio clips) and their several captions each.

    Args:
      items: float ``[N, D]`` embeddings of the images (or clips).
      captions: float ``[M, D]`` embeddings of every caption of every item.
      caption_items: int ``[M]``: the row of ``items`` that caption ``m`` describes.
      ks: the recall cut-offs.
      modality: the items' modality, for the metric names.

    Returns:
      ``<modality>_to_text_recall@k``: the fraction of items with any of their captions among
      the ``k`` captions nearest to them; ``text_to_<modality>_recall@k``: the fraction of
      captions whose own item is among the ``k`` items nearest to them (every caption a
      query). Ties by lower index, as in :func:`first_positive_ranks`.
    """
    caption_items = np.asarray(caption_items, np.int64)
    if len(caption_items) and (caption_items.min() < 0 or caption_items.max() >= len(items)):
        raise ValueError(f"caption_items must index the {len(items)} items")
    item_keys = np.arange(len(items))
    to_text = recall_at_k(first_positive_ranks(items, captions, item_keys, caption_items), ks)
    to_items = recall_at_k(first_positive_ranks(captions, items, caption_items, item_keys), ks)
    metrics = {f"{modality}_to_text_recall@{k}": v for k, v in to_text.items()}
    metrics.update({f"text_to_{modality}_recall@{k}": v for k, v in to_items.items()})
    return metrics
