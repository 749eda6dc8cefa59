"""Tests for mmtx/evaluate/retrieval.py against plain-loop references, on inputs with ties."""

import numpy as np
import pytest

from mmtx.evaluate.retrieval import (
    caption_retrieval,
    first_positive_ranks,
    recall_at_k,
    retrieval_recall,
)

DIM = 8


def tied_embeddings(rng, count):
    """``[count, DIM]`` vectors with 1 or 4 nonzero entries of +-m (m a small int), so the
    normalised entries are +-1 or +-0.5 and every cosine is a multiple of 1/8, exact in float:
    many exact ties, the same in any summation order."""
    rows = np.zeros((count, DIM), np.float32)
    for row in rows:
        support = rng.choice(DIM, size=rng.choice([1, 4]), replace=False)
        row[support] = rng.choice([-1.0, 1.0], size=len(support)) * rng.integers(1, 4)
    return rows


def cosine(a, b):
    dot = sum(float(x) * float(y) for x, y in zip(a, b, strict=True))
    norm_a = sum(float(x) ** 2 for x in a) ** 0.5
    norm_b = sum(float(y) ** 2 for y in b) ** 0.5
    return dot / (norm_a * norm_b)


def reference_order(query, gallery):
    """Gallery indices by descending cosine, ties by lower index."""
    scores = [cosine(query, item) for item in gallery]
    return sorted(range(len(gallery)), key=lambda j: (-scores[j], j))


def reference_recall(queries, gallery, query_keys, gallery_keys, k):
    hits = 0
    for query, key in zip(queries, query_keys, strict=True):
        order = reference_order(query, gallery)
        hits += any(gallery_keys[j] == key for j in order[:k])
    return hits / len(queries)


def reference_caption_retrieval(images, captions, caption_images, k):
    image_to_text = 0
    for i, image in enumerate(images):
        order = reference_order(image, captions)
        image_to_text += any(caption_images[j] == i for j in order[:k])
    text_to_image = 0
    for caption, image_index in zip(captions, caption_images, strict=True):
        text_to_image += image_index in reference_order(caption, images)[:k]
    return image_to_text / len(images), text_to_image / len(captions)


@pytest.mark.parametrize("seed", range(4))
def test_retrieval_recall_matches_the_reference_with_ties(seed):
    rng = np.random.default_rng(seed)
    queries, gallery = tied_embeddings(rng, 12), tied_embeddings(rng, 15)
    query_keys, gallery_keys = rng.integers(0, 4, 12), rng.integers(0, 5, 15)
    ks = (1, 2, 5, 15)
    got = retrieval_recall(queries, gallery, query_keys, gallery_keys, ks)
    for k in ks:
        assert got[k] == reference_recall(queries, gallery, query_keys, gallery_keys, k), k
    # Queries whose key no gallery item has are misses at every k (rank M).
    ranks = first_positive_ranks(queries, gallery, query_keys, gallery_keys)
    missing = ~np.isin(query_keys, gallery_keys)
    assert (ranks[missing] == len(gallery)).all()


def test_ties_go_to_the_lower_gallery_index():
    query = np.array([[1.0, 0.0]])
    # Items 0 and 2 tie with the query (the same direction), item 1 is worse.
    gallery = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    assert first_positive_ranks(query, gallery, [7], [7, 0, 0])[0] == 0
    assert first_positive_ranks(query, gallery, [7], [0, 0, 7])[0] == 1  # behind item 0
    assert first_positive_ranks(query, gallery, [7], [0, 7, 0])[0] == 2
    assert first_positive_ranks(query, gallery, [7], [0, 0, 0])[0] == 3  # no positive
    # Two tied positives: the first of them counts.
    assert first_positive_ranks(query, gallery, [7], [7, 0, 7])[0] == 0


@pytest.mark.parametrize("seed", range(4))
def test_caption_retrieval_matches_the_reference_with_ties(seed):
    rng = np.random.default_rng(100 + seed)
    num_images = 7
    # 1..4 captions per image (COCO has 5-7), in shuffled order.
    caption_images = np.concatenate([[i] * rng.integers(1, 5) for i in range(num_images)])
    rng.shuffle(caption_images)
    images = tied_embeddings(rng, num_images)
    captions = tied_embeddings(rng, len(caption_images))
    # Exact duplicates too: an image equal to a caption of another image.
    images[3] = captions[0]
    ks = (1, 2, 5, 10)
    got = caption_retrieval(images, captions, caption_images, ks)
    assert set(got) == {f"{d}_recall@{k}" for d in ("image_to_text", "text_to_image") for k in ks}
    for k in ks:
        image_to_text, text_to_image = reference_caption_retrieval(
            images, captions, caption_images, k
        )
        assert got[f"image_to_text_recall@{k}"] == image_to_text, k
        assert got[f"text_to_image_recall@{k}"] == text_to_image, k


def test_caption_retrieval_by_hand():
    # Image 0 has captions 0 and 2, image 1 has caption 1. Captions 0 and 1 tie for image 0.
    images = np.array([[1.0, 0.0], [0.0, 1.0]])
    captions = np.array([[1.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])
    got = caption_retrieval(images, captions, [0, 1, 0], ks=(1, 2), modality="audio")
    # audio -> text: image 0's first is caption 0 (tie, lower index): hit@1; image 1's order
    # is captions 0, 1 (tie), 2: its caption 1 is second.
    assert got["audio_to_text_recall@1"] == 0.5 and got["audio_to_text_recall@2"] == 1.0
    # text -> audio: captions 0 and 1 tie between the images (image 0 first): caption 0 hit,
    # caption 1 at 2; caption 2 prefers image 1 (0 > -1): its image 0 at 2.
    assert got["text_to_audio_recall@1"] == pytest.approx(1 / 3)
    assert got["text_to_audio_recall@2"] == 1.0


def test_block_size_and_the_argsort_formulation_agree():
    rng = np.random.default_rng(0)
    queries, gallery = rng.normal(size=(50, 6)), rng.normal(size=(40, 6))
    query_keys, gallery_keys = rng.integers(0, 10, 50), rng.integers(0, 10, 40)
    ranks = first_positive_ranks(queries, gallery, query_keys, gallery_keys)
    for block_size in (1, 7, 64):
        np.testing.assert_array_equal(
            first_positive_ranks(queries, gallery, query_keys, gallery_keys, block_size=block_size),
            ranks,
        )
    # As a stable argsort of the similarities orders the gallery.
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    order = np.argsort(-(q @ g.T), axis=1, kind="stable")
    matches = gallery_keys[order] == query_keys[:, None]
    expected = np.where(matches.any(1), matches.argmax(1), len(gallery))
    np.testing.assert_array_equal(ranks, expected)


def test_recall_at_k_and_bad_input():
    assert recall_at_k(np.array([0, 1, 4, 9]), ks=(1, 5, 10)) == {1: 0.25, 5: 0.75, 10: 1.0}
    with pytest.raises(ValueError, match="one key per item"):
        first_positive_ranks(np.ones((2, 3)), np.ones((4, 3)), [0], [0, 1, 2, 3])
    with pytest.raises(ValueError, match="must index the 2 items"):
        caption_retrieval(np.ones((2, 3)), np.ones((3, 3)), [0, 1, 2])
