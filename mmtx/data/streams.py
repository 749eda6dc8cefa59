"""Streamed sources (WebDataset tar shards, Parquet files) as grain iterator datasets.

A stream is a list of shard files read front to back, never loaded whole and never needing
random access, so it works on a bucket larger than the disk. The pipeline, per process::

    shard order --> process's shards --> interleave(cycle_length) --> window shuffle --> ...
    (shuffled per epoch,   (every P-th)     (shards read at once)      (shuffle_buffer)
     or drawn with replacement)

* Training: each epoch shuffles the shard list with ``config.data.seed`` (a new order each
  epoch) and process ``i`` of ``P`` reads the shards at positions ``i, i + P, ...`` of that
  sequence, so together the processes read every shard, hence every example, exactly once per
  epoch. With ``resampled`` (open_clip's ``--dataset-resampled``) every process instead draws
  shards with replacement, from its own seeded stream. Grain worker processes
  (``config.data.num_workers``) split a process's shards again.
* Evaluation: the shards in order, split by process, read once, not shuffled.

The position is grain's iterator state: which shards are open and, for each, how many items it
has given (:class:`ShardIterDataset`), plus the shuffle window's start and place, and the
random-number index of the augmentation. A resumed iterator reopens its shards and skips what
it had read, so kill -9 and resume see the same examples in the same order.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import grain
import numpy as np

from mmtx.data.shard_readers import ShardReader

# Epochs the shard order is laid out for: training stops long before (the order is lazy).
_EPOCHS = sys.maxsize // (1 << 32)


class _ShardIterator(grain.DatasetIterator):
    def __init__(self, url: str, reader: ShardReader):
        super().__init__()
        self._url, self._reader = url, reader
        self._taken = 0
        self._items: Iterator[dict[str, Any]] | None = None

    def __next__(self) -> dict[str, Any]:
        if self._items is None:
            self._items = self._reader(self._url, self._taken)
        item = next(self._items)
        self._taken += 1
        return item

    def get_state(self) -> dict[str, Any]:
        return {"taken": self._taken}

    def set_state(self, state: dict[str, Any]) -> None:
        self._taken = int(state["taken"])
        self._items = None  # reopened at the position on the next read

    def close(self) -> None:
        self._items = None


class ShardIterDataset(grain.IterDataset):
    """The items of one shard, read by ``reader``; its iterator's state is the number of items
    given (``{"taken": n}``), and restoring it reopens the shard at that item."""

    def __init__(self, url: str, reader: ShardReader):
        super().__init__()
        self.url, self._reader = url, reader

    def __iter__(self) -> grain.DatasetIterator:
        return _ShardIterator(self.url, self._reader)

    def __str__(self) -> str:
        return f"ShardIterDataset({self.url!r})"


def _resampled_shard(index: int, rng: np.random.Generator, urls: Sequence[str]) -> str:
    del index
    return urls[int(rng.integers(len(urls)))]


def shard_order(
    urls: Sequence[str],
    *,
    seed: int,
    train: bool,
    resampled: bool,
    process_index: int,
    process_count: int,
) -> grain.MapDataset:
    """This process's shards, in reading order (a lazy :class:`grain.MapDataset` of urls):
    see the module for the three orders."""
    urls = list(urls)
    if train and resampled:
        draws = grain.MapDataset.range(_EPOCHS * len(urls))
        return draws.random_map(
            functools.partial(_resampled_shard, urls=urls), seed=seed + 7919 * process_index
        )
    order = grain.MapDataset.source(urls)
    if train:
        order = order.shuffle(seed=seed).repeat(_EPOCHS)
    return order[process_index::process_count]


def stream_dataset(
    urls: Sequence[str],
    reader: ShardReader,
    *,
    seed: int,
    train: bool,
    resampled: bool = False,
    process_index: int = 0,
    process_count: int = 1,
    cycle_length: int = 4,
    shuffle_buffer: int = 1000,
) -> grain.IterDataset:
    """The source examples of the shards ``urls`` for one process (see the module): a grain
    :class:`grain.IterDataset` of dicts as ``reader`` yields them, checkpointable."""
    order = shard_order(
        urls,
        seed=seed,
        train=train,
        resampled=resampled,
        process_index=process_index,
        process_count=process_count,
    )
    shards = order.map(functools.partial(ShardIterDataset, reader=reader))
    dataset = grain.experimental.InterleaveIterDataset(
        shards, cycle_length=cycle_length if train else 1
    )
    if train and shuffle_buffer > 1:
        dataset = grain.experimental.WindowShuffleIterDataset(
            dataset, window_size=shuffle_buffer, seed=seed
        )
    return dataset
