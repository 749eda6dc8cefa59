"""Tests for mmtx/train/metrics.py: retrieval recall, TensorBoard round trip, progress line."""

import re
import types

import numpy as np
import pytest

from mmtx.train import metrics
from mmtx.train.metrics import (
    MetricWriter,
    Progress,
    format_seconds,
    read_scalars,
    retrieval_recall,
)


def reference_recall(queries, gallery, query_keys, gallery_keys, ks):
    """Loop reference: rank the gallery by cosine (ties by index) and look for a matching key."""
    out = {}
    for k in ks:
        hits = 0
        for q, qk in zip(queries, query_keys, strict=True):
            sims = []
            for j, g in enumerate(gallery):
                cos = float(np.dot(q, g) / (np.linalg.norm(q) * np.linalg.norm(g)))
                sims.append((-cos, j))
            top = [j for _, j in sorted(sims)[:k]]
            hits += any(gallery_keys[j] == qk for j in top)
        out[k] = hits / len(queries)
    return out


# 5 gallery items on distinct directions; items 1 and 3 share key 7.
GALLERY = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1]], np.float32)
GALLERY_KEYS = np.array([10, 7, 20, 7, 30])
# Each query's ranking (cosine, descending) is written next to it.
QUERIES = np.array(
    [
        [1.0, 0.1, 0.0],  # 0, 3, ... ; key 10 -> hit at 1
        [0.1, 1.0, 0.0],  # 1, 3, ... ; key 7  -> hit at 1
        [0.0, 0.2, 1.0],  # 2, 4, ... ; key 30 -> hit at 2 (item 4)
        [0.0, 0.0, 2.0],  # 2, 4, ... ; key 10 -> miss at 1 and 2 (item 0 orthogonal)
    ],
    np.float32,
)
QUERY_KEYS = np.array([10, 7, 30, 10])


def test_retrieval_recall_hand_computed():
    got = retrieval_recall(QUERIES, GALLERY, QUERY_KEYS, GALLERY_KEYS, ks=(1, 2, 5))
    assert got == {1: 0.5, 2: 0.75, 5: 1.0}
    assert got == reference_recall(QUERIES, GALLERY, QUERY_KEYS, GALLERY_KEYS, (1, 2, 5))


def test_retrieval_recall_counts_a_different_item_with_the_same_key():
    # Query 1 ranks item 1 first; move key 7 off item 1 so only item 3 (ranked 2nd) has it.
    keys = GALLERY_KEYS.copy()
    keys[1] = 99
    got = retrieval_recall(QUERIES[1:2], GALLERY, QUERY_KEYS[1:2], keys, ks=(1, 2))
    assert got == {1: 0.0, 2: 1.0}
    # A query whose nearest item is a *different* item sharing its key is a hit at 1.
    query = np.array([[1.0, 1.1, 0.0]], np.float32)  # nearest is item 3 (key 7), not item 1
    assert retrieval_recall(query, GALLERY, np.array([7]), GALLERY_KEYS, ks=(1,)) == {1: 1.0}


def test_retrieval_recall_uses_cosine_not_dot_product():
    gallery = np.array([[10.0, 10.0], [1.0, 0.0]], np.float32)
    query = np.array([[1.0, 0.05]], np.float32)  # dot product prefers item 0, cosine item 1
    got = retrieval_recall(query, gallery, np.array([1]), np.array([0, 1]), ks=(1,))
    assert got == {1: 1.0}


def test_retrieval_recall_ties_rank_the_lower_gallery_index_first():
    # Even items all point along the query (tied at cosine 1), odd items are orthogonal.
    rng = np.random.default_rng(0)
    gallery = np.zeros((64, 2), np.float32)
    gallery[0::2, 0] = rng.uniform(1, 2, 32)
    gallery[1::2, 1] = rng.uniform(1, 2, 32)
    queries = np.array([[1.0, 0.0]] * 4, np.float32)
    # Key 2k is the (k+1)-th of the tied items.
    got = retrieval_recall(queries, gallery, np.array([0, 2, 8, 10]), np.arange(64), ks=(1, 2, 5))
    assert got == {1: 0.25, 2: 0.5, 5: 0.75}


def test_retrieval_recall_random_matches_reference():
    rng = np.random.default_rng(0)
    queries = rng.normal(size=(12, 4)).astype(np.float32)
    gallery = rng.normal(size=(9, 4)).astype(np.float32)
    qk, gk = rng.integers(0, 4, 12), rng.integers(0, 4, 9)
    ks = (1, 2, 3, 9)
    got = retrieval_recall(queries, gallery, qk, gk, ks=ks)
    want = reference_recall(queries, gallery, qk, gk, ks)
    for k in ks:
        assert got[k] == pytest.approx(want[k])


def test_metric_writer_read_scalars_round_trip(tmp_path):
    # (tensorboardX rewrites characters such as "@" in tags to "_", so tags here avoid them.)
    logdir = str(tmp_path / "logs")
    writer = MetricWriter(logdir)
    written = {}
    for step in (0, 5, 17, 1000):
        scalars = {"train/loss": 1.0 / (step + 3), "eval/recall_1": step * 0.1 + 0.3}
        if step % 2:
            scalars["lr"] = np.float32(step * 1e-4)
        writer.write_scalars(step, scalars)
        for tag, value in scalars.items():
            written.setdefault(tag, []).append((step, float(np.float32(value))))
    writer.flush()
    writer.close()
    got = read_scalars(logdir)
    assert set(got) == {"train/loss", "eval/recall_1", "lr"}
    for tag, values in written.items():
        assert [s for s, _ in got[tag]] == [s for s, _ in values]
        assert [v for _, v in got[tag]] == [v for _, v in values]  # exact float32 values


def test_read_scalars_empty_dir_and_disabled_writer(tmp_path):
    assert read_scalars(str(tmp_path)) == {}
    writer = MetricWriter(str(tmp_path / "off"), enabled=False)
    writer.write_scalars(1, {"a": 1.0})
    writer.flush()
    writer.close()
    assert not (tmp_path / "off").exists()


def fake_clock(monkeypatch, times):
    """Makes ``metrics.time.perf_counter`` return ``times`` in order (only in metrics)."""
    clock = iter(times)
    monkeypatch.setattr(metrics, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))


def test_progress_line_format(monkeypatch):
    fake_clock(monkeypatch, [100.0, 110.0])
    progress = Progress(total_steps=200, start_step=0)
    line = progress.line(50, {"loss": 1.23456, "acc": 0.5})
    # 50 steps in 10 s -> 5 steps/s; 150 left -> 30 s.
    assert line.startswith("step 50/200 (25%) 5.00 steps/s ETA 0m30s")
    assert line.endswith("| loss=1.235 acc=0.5")


def test_progress_rate_is_over_the_last_interval(monkeypatch):
    fake_clock(monkeypatch, [0.0, 10.0, 12.0])
    progress = Progress(total_steps=1000, start_step=100)
    # 100 steps in 10 s -> 10 steps/s; 800 left -> 80 s.
    assert " 10.00 steps/s ETA 1m20s " in progress.line(200, {})
    # Next interval: 100 steps in 2 s -> 50 steps/s; 700 left -> 14 s.
    assert re.search(r"step 300/1000 \(30%\) 50\.00 steps/s ETA 0m14s \| $", progress.line(300, {}))


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0m00s"),
        (0.4, "0m00s"),
        (59.6, "1m00s"),
        (125.0, "2m05s"),
        (3599, "59m59s"),
        (3600, "1h00m00s"),
        (3 * 3600 + 7 * 60 + 9, "3h07m09s"),
        (100 * 3600, "100h00m00s"),
    ],
)
def test_format_seconds(seconds, text):
    assert format_seconds(seconds) == text
