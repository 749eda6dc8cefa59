"""Bad examples (an undecodable JPEG, a missing file, ...) are skipped and counted, never fatal.

A source or the preprocessing marks a bad example with :func:`bad` instead of raising.
:class:`DropBadIterDataset`, the pipeline stage before batching, drops the marked examples,
counts them by reason and attaches the counts to the next good example (``_skipped``: int32
``[len(REASONS)]``, so a batch carries ``[B, len(REASONS)]``); where the bad examples pass a
fraction of those seen (``config.data.max_bad_fraction``) it raises :class:`BadDataError`,
naming example files. :class:`SkipTally` wraps the pipeline's iterator in the training
process: it takes ``_skipped`` off every batch, keeps the run's totals, which it checkpoints
with the data position, and writes them as ``skipped 3 (2 undecodable image, 1 missing file)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grain
import numpy as np

# Why an example was skipped; the order is the layout of the ``_skipped`` counts.
REASONS: tuple[str, ...] = (
    "missing file",  # a CSV row's or folder's file that cannot be opened
    "undecodable image",
    "image too large",  # past PIL's decompression-bomb limit
    "undecodable audio",
    "empty caption",
    "missing input",  # a sample without a field the model needs (a shard member with no .jpg)
    "truncated tar",  # a tar member cut short, a truncated shard, a damaged tar header
    "truncated parquet",  # a Parquet file that cannot be read to its end
    "bad label",  # a label that is not an integer
    "bad record",  # an ArrayRecord record that is not an mmtx record
)
BAD_KEY = "_bad"
NAME_KEY = "_name"
SKIPPED_KEY = "_skipped"
# Bad examples are judged against max_bad_fraction only after this many examples, so that the
# first few bad files of a run do not stop it.
MIN_EXAMPLES_JUDGED = 100
# File names kept per stage for the error message.
MAX_NAMES = 5


class BadDataError(RuntimeError):
    """More of the data is bad than ``config.data.max_bad_fraction`` allows."""


def bad(reason: str, name: str) -> dict[str, Any]:
    """The marker of a bad example: ``reason`` (one of :data:`REASONS`) and ``name`` (the file
    or shard member it came from)."""
    if reason not in REASONS:
        raise ValueError(f"unknown reason {reason!r}; one of {REASONS}")
    return {BAD_KEY: REASONS.index(reason), NAME_KEY: name}


def is_bad(example: Mapping[str, Any]) -> bool:
    """Whether ``example`` is a :func:`bad` marker."""
    return BAD_KEY in example


def describe(counts: Mapping[str, int]) -> str:
    """``{"undecodable image": 2, "missing file": 1}`` -> ``"skipped 3 (2 undecodable image,
    1 missing file)"``; ``""`` when nothing was skipped."""
    shown = {reason: int(n) for reason, n in counts.items() if n}
    if not shown:
        return ""
    parts = ", ".join(f"{n} {reason}" for reason, n in shown.items())
    return f"skipped {sum(shown.values())} ({parts})"


def as_counts(totals: np.ndarray) -> dict[str, int]:
    """int ``[len(REASONS)]`` -> ``{reason: count}`` of the reasons with a count."""
    return {r: int(n) for r, n in zip(REASONS, totals, strict=True) if n}


class _DropBadIterator(grain.DatasetIterator):
    def __init__(self, parent: grain.DatasetIterator, max_bad_fraction: float):
        super().__init__(parent)
        self._max_bad_fraction = max_bad_fraction
        self._seen = 0
        self._bad = [0] * len(REASONS)
        self._names: list[str] = []

    def __next__(self) -> dict[str, Any]:
        pending = np.zeros(len(REASONS), np.int32)
        while True:
            example = next(self._parent)
            self._seen += 1
            if not is_bad(example):
                return {**example, SKIPPED_KEY: pending}
            reason = int(example[BAD_KEY])
            pending[reason] += 1
            self._bad[reason] += 1
            named = f"{example[NAME_KEY]} ({REASONS[reason]})"
            if len(self._names) < MAX_NAMES and named not in self._names:
                self._names.append(named)
            self._check()

    def _check(self) -> None:
        total = sum(self._bad)
        if self._seen < MIN_EXAMPLES_JUDGED or total <= self._max_bad_fraction * self._seen:
            return
        counts = describe(dict(zip(REASONS, self._bad, strict=True)))
        raise BadDataError(
            f"{total} of {self._seen} examples read are bad, more than "
            f"config.data.max_bad_fraction={self._max_bad_fraction} allows ({counts}); "
            f"for example {'; '.join(self._names)}. Fix or remove these files, or raise "
            "config.data.max_bad_fraction."
        )

    def get_state(self) -> dict[str, Any]:
        return {
            "parent": self._parent.get_state(),
            "seen": self._seen,
            "bad": list(self._bad),
            "names": list(self._names),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["parent"])
        self._seen = int(state["seen"])
        self._bad = [int(n) for n in state["bad"]]
        self._names = list(state["names"])


class DropBadIterDataset(grain.IterDataset):
    """Drops :func:`bad` examples, attaching their counts to the next good example as
    ``_skipped`` int32 ``[len(REASONS)]``; raises :class:`BadDataError` once more than
    ``max_bad_fraction`` of the examples read (after :data:`MIN_EXAMPLES_JUDGED`) are bad.
    Its position and counts are part of the iterator's checkpointable state."""

    def __init__(self, parent: grain.IterDataset, max_bad_fraction: float):
        super().__init__(parent)
        self._max_bad_fraction = max_bad_fraction

    def __iter__(self) -> grain.DatasetIterator:
        return _DropBadIterator(self._parent.__iter__(), self._max_bad_fraction)

    def __str__(self) -> str:
        return f"DropBadIterDataset(max_bad_fraction={self._max_bad_fraction})"


class SkipTally(grain.DatasetIterator):
    """The training process's view of a pipeline iterator: batches without ``_skipped``, and
    :attr:`counts`, the skipped examples of this run (from its start, across resumes) by
    reason. A grain iterator: checkpointable like the one it wraps (``get_state``/
    ``set_state``), its counts included; closing it closes the wrapped one."""

    def __init__(self, iterator: grain.DatasetIterator):
        super().__init__(iterator)
        self._totals = np.zeros(len(REASONS), np.int64)

    def __next__(self) -> dict[str, Any]:
        batch = dict(next(self._parent))
        skipped = batch.pop(SKIPPED_KEY, None)
        if skipped is not None:
            self._totals += np.asarray(skipped, np.int64).reshape(-1, len(REASONS)).sum(0)
        return batch

    @property
    def totals(self) -> np.ndarray:
        """int64 ``[len(REASONS)]``: examples skipped by this process, per reason."""
        return self._totals.copy()

    @property
    def counts(self) -> dict[str, int]:
        """Reason -> examples skipped, the reasons with none left out."""
        return as_counts(self._totals)

    def get_state(self) -> dict[str, Any]:
        return {"pipeline": self._parent.get_state(), "skipped": self._totals.tolist()}

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["pipeline"])
        self._totals = np.asarray(state["skipped"], np.int64)
