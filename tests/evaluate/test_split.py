"""Tests for mmtx/evaluate/split.py: padding, attribute keys and evaluate() with a fake step."""

import itertools
import math

import numpy as np
import pytest

from mmtx.evaluate.split import attribute_keys, evaluate, pad_batch

NUM_CLASSES = 5
BATCH = 4


def test_pad_batch_pads_leading_axis_and_masks():
    batch = {
        "label": np.array([3, 1], np.int32),
        "image": np.ones((2, 2, 2, 3), np.float32),
        "text_mask": np.array([[True, True, False], [True, False, False]]),
    }
    padded, count = pad_batch(batch, 5)
    assert count == 2
    assert set(padded) == set(batch)
    for key, value in padded.items():
        assert value.shape == (5, *batch[key].shape[1:])
        assert value.dtype == batch[key].dtype
        np.testing.assert_array_equal(value[:2], batch[key])
    np.testing.assert_array_equal(padded["label"][2:], 0)
    np.testing.assert_array_equal(padded["image"][2:], 0.0)
    np.testing.assert_array_equal(padded["text_mask"][2:], [[True, False, False]] * 3)
    # The input is not modified.
    np.testing.assert_array_equal(batch["text_mask"], [[True, True, False], [True, False, False]])


def test_pad_batch_full_batch_is_unchanged_and_no_text_mask_is_fine():
    batch = {"label": np.arange(3, dtype=np.int32)}
    same, count = pad_batch(batch, 3)
    assert count == 3
    np.testing.assert_array_equal(same["label"], [0, 1, 2])
    padded, count = pad_batch(batch, 4)
    assert count == 1 + 2 and "text_mask" not in padded
    np.testing.assert_array_equal(padded["label"], [0, 1, 2, 0])


def test_attribute_keys_distinct_for_distinct_tuples():
    values = [0, 1, 2, 7, 999]
    rows = list(itertools.product(values, values, [0, 3], values))
    columns = {
        name: np.array([r[i] for r in rows], np.int32)
        for i, name in enumerate(("shape", "colour", "size", "position"))
    }
    keys = attribute_keys(columns, ("shape", "colour", "size", "position"))
    assert keys.dtype == np.int64 and keys.shape == (len(rows),)
    assert len(set(keys.tolist())) == len(rows)
    # Equal tuples give equal keys; order of the named attributes matters only in value.
    sub = attribute_keys(columns, ("shape", "colour"))
    for i, j in itertools.combinations(range(0, len(rows), 7), 2):
        same = rows[i][:2] == rows[j][:2]
        assert (sub[i] == sub[j]) == same


# ---------------------------------------------------------------------------- evaluate

# 10 examples in batches of 4, 4, 2 (the last is padded to 4).
LABELS = np.array([0, 1, 2, 3, 4, 0, 1, 2, 3, 4], np.int32)
IDS = np.arange(10, dtype=np.int32)


def batches(with_attributes: bool):
    out = []
    for start in range(0, 10, BATCH):
        batch = {
            "label": LABELS[start : start + BATCH],
            "id": IDS[start : start + BATCH] + 1,  # +1: padded rows have id 0
            "text_mask": np.ones((len(LABELS[start : start + BATCH]), 3), bool),
        }
        if with_attributes:
            label = batch["label"]
            batch.update(
                shape=label, colour=label % 2, size=np.ones_like(label), position=label % 3
            )
        out.append(batch)
    assert [len(b["label"]) for b in out] == [4, 4, 2]
    return out


def one_hot(index, size):
    return np.eye(size, dtype=np.float32)[index]


def logits_of(batch):
    """Right on examples whose id is odd (ids 1..10 -> 5 of 10), wrong otherwise."""
    label, ids = batch["label"], batch["id"]
    predicted = np.where(ids % 2 == 1, label, (label + 1) % NUM_CLASSES)
    scores = np.linspace(-1.0, 1.0, NUM_CLASSES, dtype=np.float32)[None] * 0.3
    return (3.0 * one_hot(predicted, NUM_CLASSES) + scores + 0.1 * ids[:, None]).astype(np.float32)


def make_eval_step(seen, embed):
    def eval_step(params, batch):
        assert params == "params"
        assert len(batch["label"]) == BATCH  # always padded to the local batch size
        assert batch["text_mask"][:, 0].all()
        seen.append(batch)
        return {
            "text": embed(batch),
            "image": embed(batch) * 2.0,
            "audio": embed(batch) + 0.01,
            "logits": logits_of(batch),
            "logit_scale": np.float32(2.0),  # a scalar output is ignored
        }

    return eval_step


def reference_classification(all_batches):
    logits = np.concatenate([logits_of(b) for b in all_batches]).astype(np.float64)
    labels = np.concatenate([b["label"] for b in all_batches])
    total = 0.0
    for row, label in zip(logits, labels, strict=True):
        total += math.log(sum(math.exp(x) for x in row)) - row[label]
    return float(np.mean(np.argmax(logits, 1) == labels)), total / len(labels)


def test_evaluate_with_attributes():
    data = batches(with_attributes=True)
    seen = []
    # One-hot of the label: same label <-> same attributes, so every first hit is correct.
    step = make_eval_step(seen, lambda b: one_hot(b["label"], NUM_CLASSES))
    metrics = evaluate(step, "params", data, local_batch_size=BATCH, to_global=lambda b: b)
    assert len(seen) == 3
    accuracy, classification = reference_classification(data)
    assert accuracy == 0.5
    assert metrics["num_examples"] == 10.0
    assert metrics["accuracy"] == pytest.approx(0.5)
    assert metrics["classification"] == pytest.approx(classification, rel=1e-6)
    expected_keys = {"num_examples", "accuracy", "classification"}
    directions = (("text", "image"), ("image", "text"), ("text", "audio"), ("audio", "text"))
    for query, gallery in directions:
        for k in (1, 5):
            name = f"{query}_to_{gallery}_recall@{k}"
            expected_keys.add(name)
            assert metrics[name] == 1.0, name
    assert set(metrics) == expected_keys
    assert all(isinstance(v, float) for v in metrics.values())


def test_evaluate_without_attributes_uses_example_identity():
    data = batches(with_attributes=False)
    # Embeddings unique per example (one-hot of the id): each query finds itself first.
    unique = make_eval_step([], lambda b: one_hot(b["id"], 11))
    metrics = evaluate(unique, "params", data, local_batch_size=BATCH, to_global=lambda b: b)
    assert metrics["num_examples"] == 10.0
    assert metrics["text_to_image_recall@1"] == 1.0
    assert metrics["audio_to_text_recall@1"] == 1.0

    # Embeddings shared by label: without attributes a hit must be the example itself, and
    # ties rank the lower index first, so only the first of each label pair (5/10) is a hit
    # at 1 (the padded rows, were they kept, would add extra label-0 items).
    by_label = make_eval_step([], lambda b: one_hot(b["label"], NUM_CLASSES))
    metrics = evaluate(by_label, "params", data, local_batch_size=BATCH, to_global=lambda b: b)
    assert metrics["num_examples"] == 10.0
    assert metrics["text_to_image_recall@1"] == 0.5
    assert metrics["image_to_text_recall@1"] == 0.5
    assert metrics["text_to_image_recall@5"] == 1.0


def test_evaluate_drops_padded_rows_from_retrieval():
    # Batches of 3, 3, 3, 1 padded to 4: 3 padded rows (all-zero attributes, a key no real
    # example has since real sizes are 1) whose image embedding is exactly the label-0 text
    # embedding, while real label-0 images are only close to it. Kept, they would take rank 1
    # for the two label-0 text queries.
    data = batches(with_attributes=True)
    regrouped = [
        {k: np.concatenate([b[k] for b in data])[s : s + 3] for k in data[0]}
        for s in range(0, 10, 3)
    ]
    assert [len(b["id"]) for b in regrouped] == [3, 3, 3, 1]

    def step(params, batch):
        text = one_hot(batch["label"], NUM_CLASSES + 1)
        image = text.copy()
        image[batch["label"] == 0, NUM_CLASSES] = 0.2
        image[batch["id"] == 0] = one_hot(0, NUM_CLASSES + 1)
        return {"text": text, "image": image}

    metrics = evaluate(step, None, regrouped, local_batch_size=BATCH, to_global=lambda b: b)
    assert metrics["num_examples"] == 10.0
    assert metrics["text_to_image_recall@1"] == 1.0
    assert "accuracy" not in metrics  # no logits


def test_evaluate_without_labels_or_logits_reports_retrieval_only():
    data = [{k: v for k, v in b.items() if k != "label"} for b in batches(False)]

    def step(params, batch):
        assert len(batch["id"]) == BATCH
        return {"text": one_hot(batch["id"], 11), "image": one_hot(batch["id"], 11)}

    metrics = evaluate(step, None, data, local_batch_size=BATCH, to_global=lambda b: b)
    assert set(metrics) == {
        "num_examples",
        "text_to_image_recall@1",
        "text_to_image_recall@5",
        "image_to_text_recall@1",
        "image_to_text_recall@5",
    }
    assert metrics["num_examples"] == 10.0
    assert metrics["image_to_text_recall@1"] == 1.0


def test_evaluate_counts_only_the_pairs_present():
    """Examples whose image is absent (``present/image`` False) take no part in text<->image
    retrieval, as query or gallery item: here their filler embeddings would win."""
    data = [{k: v for k, v in b.items() if k != "label"} for b in batches(False)]
    absent_ids = {2, 5, 7}
    for b in data:
        b["present/image"] = np.asarray([i not in absent_ids for i in b["id"]])

    def step(params, batch):
        text = one_hot(batch["id"], 11)
        # The image of id j (1..10) scores 1 for caption j % 10 + 1 and 0.5 for its own
        # caption j; an absent one scores 2 for caption j % 10 + 1 (a filler that must not
        # count).
        image = one_hot(batch["id"] % 10 + 1, 11) + 0.5 * text
        image[~batch["present/image"]] *= 4.0
        return {"text": text, "image": image}

    metrics = evaluate(step, None, data, local_batch_size=BATCH, to_global=lambda b: b)
    assert metrics["num_examples"] == 10.0
    present = [i for i in range(1, 11) if i not in absent_ids]
    # Reference over the 7 present examples alone: caption i retrieves its own image first
    # only when the image that scores 1 for it (id (i - 2) % 10 + 1) is not in the gallery.
    hits = [(i - 2) % 10 + 1 not in present for i in present]
    assert 0 < sum(hits) < len(hits)
    assert metrics["text_to_image_recall@1"] == pytest.approx(np.mean(hits))
