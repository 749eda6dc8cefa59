"""Tests of mmtx.data.bad_examples: dropping, counting, the bad-fraction stop, checkpointing."""

import grain
import numpy as np
import pytest

from mmtx.data import bad_examples
from mmtx.data.bad_examples import REASONS, BadDataError, DropBadIterDataset, SkipTally


def _items(pattern):
    """``"gg b(missing file) g"`` -> examples ``{"x": i}`` and bad markers, in order."""
    out = []
    for i, token in enumerate(pattern.split()):
        if token == "g":
            out.append({"x": np.int32(i)})
        else:
            out.append(bad_examples.bad(token[2:-1].replace("_", " "), f"file{i}"))
    return out


def _reference_counts(items):
    """What each good example carries: the counts of the bad ones just before it."""
    carried, pending = [], np.zeros(len(REASONS), np.int32)
    for item in items:
        if bad_examples.is_bad(item):
            pending[item[bad_examples.BAD_KEY]] += 1
        else:
            carried.append((int(item["x"]), pending.tolist()))
            pending = np.zeros(len(REASONS), np.int32)
    return carried


def test_drop_bad_attaches_counts_to_the_next_good_example():
    items = _items("g b(missing_file) b(undecodable_image) g g b(empty_caption) g")
    dataset = DropBadIterDataset(grain.MapDataset.source(items).to_iter_dataset(), 0.9)
    got = [(int(e["x"]), e[bad_examples.SKIPPED_KEY].tolist()) for e in dataset]
    assert got == _reference_counts(items)


def test_skip_tally_sums_batches_and_checkpoints_its_totals():
    items = _items("g b(missing_file) g b(missing_file) b(truncated_tar) g g g b(bad_label) g g")
    dataset = DropBadIterDataset(grain.MapDataset.source(items).to_iter_dataset(), 0.9).batch(2)
    tally = SkipTally(iter(dataset))
    first = next(tally)
    assert set(first) == {"x"} and tally.counts == {"missing file": 1}
    state = tally.get_state()
    rest = [b["x"].tolist() for b in tally]
    assert tally.counts == {"missing file": 2, "truncated tar": 1, "bad label": 1}
    assert bad_examples.describe(tally.counts) == (
        "skipped 4 (2 missing file, 1 truncated tar, 1 bad label)"
    )
    resumed = SkipTally(iter(dataset))
    resumed.set_state(state)
    assert [b["x"].tolist() for b in resumed] == rest
    assert resumed.counts == tally.counts


def test_past_the_bad_fraction_the_error_names_files():
    items = _items(" ".join(["g"] * 80 + ["b(undecodable_image)"] * 30))
    with pytest.raises(BadDataError, match=r"max_bad_fraction=0.2.*file80 \(undecodable image\)"):
        list(DropBadIterDataset(grain.MapDataset.source(items).to_iter_dataset(), 0.2))
    # Under the fraction, or before 100 examples are seen, the run goes on.
    assert (
        len(list(DropBadIterDataset(grain.MapDataset.source(items).to_iter_dataset(), 0.3))) == 80
    )
    few = _items("b(missing_file) " * 20 + "g")
    assert len(list(DropBadIterDataset(grain.MapDataset.source(few).to_iter_dataset(), 0.0))) == 1


def test_bad_rejects_unknown_reasons_and_describe_of_nothing():
    with pytest.raises(ValueError, match="unknown reason"):
        bad_examples.bad("sad", "x")
    assert bad_examples.describe({}) == "" and bad_examples.describe({"missing file": 0}) == ""
