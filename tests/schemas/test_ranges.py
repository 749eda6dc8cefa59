"""Tests for mmtx.schemas.ranges: each range against a reference predicate written here, and
its text, which validation messages print (the former range strings, unchanged)."""

import math

import pytest

from mmtx.schemas.ranges import Above, AtLeast, Either, Interval

# (range, its text, a reference predicate): the text as the old string specs wrote it.
RANGES = [
    (Above(0), "> 0", lambda x: x > 0),
    (AtLeast(0), ">= 0", lambda x: x >= 0),
    (Above(0.5), "> 0.5", lambda x: x > 0.5),
    (Interval(0, 1, closed="left"), "[0, 1)", lambda x: 0 <= x < 1),
    (Interval(0, 1, closed="right"), "(0, 1]", lambda x: 0 < x <= 1),
    (Interval(0, 1, closed="both"), "[0, 1]", lambda x: 0 <= x <= 1),
    (Interval(0, 1, closed="neither"), "(0, 1)", lambda x: 0 < x < 1),
    (Either(-1, Above(0)), "-1 or > 0", lambda x: x == -1 or x > 0),
    (Either(-1, AtLeast(0)), "-1 or >= 0", lambda x: x == -1 or x >= 0),
]
VALUES = [-2, -1, -1.0, -0.5, 0, 0.0, 1e-9, 0.5, 1, 1.0, 1.5, 2, 10**12, math.inf, -math.inf]


@pytest.mark.parametrize(("spec", "text", "reference"), RANGES, ids=[r[1] for r in RANGES])
def test_range_contains_what_its_reference_accepts_and_prints_its_old_text(spec, text, reference):
    assert str(spec) == text
    for value in VALUES:
        assert spec.contains(value) == reference(value), value


@pytest.mark.parametrize("spec", [r[0] for r in RANGES], ids=[r[1] for r in RANGES])
def test_nan_is_in_no_range(spec):
    assert not spec.contains(math.nan)


def test_interval_rejects_an_unknown_closed():
    with pytest.raises(ValueError, match="closed must be"):
        Interval(0, 1, closed="open")
