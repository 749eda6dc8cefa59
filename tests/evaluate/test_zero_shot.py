"""Tests for mmtx/evaluate/zero_shot.py: a hand-computed classifier, top-k accuracy against a
plain-loop reference on logits with ties, and the classifier of a real model."""

import math

import numpy as np
import pytest

from mmtx.evaluate.zero_shot import (
    prompts,
    top_k_accuracy,
    zero_shot_accuracy,
    zero_shot_classifier,
    zero_shot_logits,
)

TEMPLATES = ("a {}.", "a photo of a {}.")
# Un-normalised text embeddings of the four prompts.
PROMPT_EMBEDDINGS = {
    "a cat.": [3.0, 4.0],  # normalised (0.6, 0.8)
    "a photo of a cat.": [2.0, 0.0],  # (1, 0)
    "a dog.": [0.0, 5.0],  # (0, 1)
    "a photo of a dog.": [-6.0, 8.0],  # (-0.6, 0.8)
}


def embed_text(texts):
    return np.array([PROMPT_EMBEDDINGS[t] for t in texts], np.float32)


def test_classifier_by_hand():
    classifier = zero_shot_classifier(embed_text, ["cat", "dog"], TEMPLATES)
    # cat: mean((0.6, 0.8), (1, 0)) = (0.8, 0.4), norm sqrt(0.8) -> (2, 1) / sqrt(5).
    # dog: mean((0, 1), (-0.6, 0.8)) = (-0.3, 0.9), norm sqrt(0.9) -> (-1, 3) / sqrt(10).
    expected = np.array(
        [[2 / math.sqrt(5), -1 / math.sqrt(10)], [1 / math.sqrt(5), 3 / math.sqrt(10)]]
    )
    assert classifier.shape == (2, 2) and classifier.dtype == np.float32
    np.testing.assert_allclose(classifier, expected, rtol=1e-6)
    # Images: (1, 0) is a cat (2/sqrt5 > -1/sqrt10), (0, 3) a dog (3/sqrt10 > 1/sqrt5).
    images = np.array([[1.0, 0.0], [0.0, 3.0], [0.0, 3.0]])
    logits = zero_shot_logits(images, classifier)
    np.testing.assert_allclose(logits[0], [2 / math.sqrt(5), -1 / math.sqrt(10)], rtol=1e-6)
    accuracy = zero_shot_accuracy(images, np.array([0, 1, 0]), classifier, ks=(1, 2))
    assert accuracy == {1: pytest.approx(2 / 3), 2: 1.0}


def test_prompts_are_class_major_and_templates_need_one_slot():
    assert prompts(["cat", "dog"], TEMPLATES) == [
        "a cat.",
        "a photo of a cat.",
        "a dog.",
        "a photo of a dog.",
    ]
    with pytest.raises(ValueError, match="exactly one"):
        prompts(["cat"], ["no slot"])
    with pytest.raises(ValueError, match="class names and templates"):
        zero_shot_classifier(embed_text, [], TEMPLATES)


def reference_top_k(logits, labels, k):
    hits = 0
    for row, label in zip(logits, labels, strict=True):
        order = sorted(range(len(row)), key=lambda c: (-row[c], c))
        hits += label in order[:k]
    return hits / len(labels)


@pytest.mark.parametrize("seed", range(4))
def test_top_k_accuracy_matches_the_reference_with_ties(seed):
    rng = np.random.default_rng(seed)
    logits = rng.integers(0, 3, (30, 6)).astype(np.float32)  # values 0, 1, 2: many ties
    labels = rng.integers(0, 6, 30)
    ks = (1, 2, 3, 5, 6)
    got = top_k_accuracy(logits, labels, ks)
    for k in ks:
        assert got[k] == reference_top_k(logits, labels, k), k
    assert got[6] == 1.0


def test_top_k_ties_go_to_the_lower_class_index():
    logits = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    assert top_k_accuracy(logits, np.array([0, 1]), ks=(1, 2)) == {1: 0.5, 2: 1.0}


def test_classifier_of_a_model(tmp_path):
    """With an mmtx.Model the prompts go through its tokenizer and text tower."""
    from mmtx import config as config_lib
    from mmtx import create_model

    config = config_lib.apply_variant(config_lib.default_config(), "tiny")
    config.model.modalities = ("text", "image")
    model = create_model(config)
    names = ["red circle", "blue square", "green star"]
    classifier = zero_shot_classifier(model, names, TEMPLATES)
    assert classifier.shape == (config.model.embed_dim, 3)
    columns = []
    for name in names:
        text = model(text_inputs=[t.format(name) for t in TEMPLATES], normalize=True)["text"]
        mean = text.astype(np.float64).mean(0)
        columns.append(mean / np.linalg.norm(mean))
    np.testing.assert_allclose(classifier, np.stack(columns, 1), atol=1e-5)
