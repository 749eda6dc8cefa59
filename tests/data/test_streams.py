"""Tests of mmtx.data.streams: shard order, exactly once per epoch across processes, resume."""

import collections
import copy

from test_shard_readers import write_tar

from mmtx.data import shard_readers, streams


def _shards(tmp_path, num_shards, per_shard):
    urls = []
    for s in range(num_shards):
        samples = [(f"{s}_{i}", {"txt": f"{s}-{i}".encode()}) for i in range(per_shard)]
        urls.append(write_tar(tmp_path / f"{s:05d}.tar", samples))
    return urls


def _take(iterator, n):
    return [next(iterator)["caption"] for _ in range(n)]


def test_two_processes_see_every_example_once_per_epoch(tmp_path):
    urls = _shards(tmp_path, 5, 4)  # 20 examples; 5 shards do not split evenly over 2
    seen = collections.Counter()
    for process in range(2):
        # Shards one after another, windows of 4 (a shard's length): the first 20 examples of
        # a process are exactly its first 5 shard slots, half of two epochs' 10.
        dataset = streams.stream_dataset(
            urls,
            shard_readers.read_tar,
            seed=3,
            train=True,
            process_index=process,
            process_count=2,
            cycle_length=1,
            shuffle_buffer=4,
        )
        seen.update(_take(iter(dataset), 20))
    assert len(seen) == 20 and set(seen.values()) == {2}
    # Without training's shuffle and repeat (evaluation), together once.
    once = collections.Counter()
    for process in range(2):
        dataset = streams.stream_dataset(
            urls,
            shard_readers.read_tar,
            seed=3,
            train=False,
            process_index=process,
            process_count=2,
        )
        once.update(e["caption"] for e in dataset)
    assert len(once) == 20 and set(once.values()) == {1}


def test_every_epoch_reads_each_shard_once_in_a_new_order(tmp_path):
    urls = _shards(tmp_path, 6, 1)
    order = streams.shard_order(
        urls, seed=0, train=True, resampled=False, process_index=0, process_count=1
    )
    epochs = [[order[e * 6 + i] for i in range(6)] for e in range(3)]
    assert all(sorted(epoch) == sorted(urls) for epoch in epochs)
    assert epochs[0] != epochs[1]
    evaluation = streams.shard_order(
        urls, seed=0, train=False, resampled=False, process_index=1, process_count=2
    )
    assert list(evaluation) == urls[1::2]


def test_resampled_draws_shards_with_replacement_per_process(tmp_path):
    urls = _shards(tmp_path, 4, 1)
    draws = [
        [
            streams.shard_order(
                urls, seed=0, train=True, resampled=True, process_index=p, process_count=2
            )[i]
            for i in range(40)
        ]
        for p in range(2)
    ]
    assert draws[0] != draws[1] and set(draws[0]) == set(urls)
    assert any(collections.Counter(d[:4]).most_common(1)[0][1] > 1 for d in draws)


def test_resumed_iterator_continues_exactly(tmp_path):
    urls = _shards(tmp_path, 4, 6)
    dataset = streams.stream_dataset(
        urls, shard_readers.read_tar, seed=1, train=True, cycle_length=3, shuffle_buffer=5
    )
    iterator = iter(dataset)
    _take(iterator, 11)
    state = copy.deepcopy(iterator.get_state())
    expected = _take(iterator, 40)  # into the next epoch
    resumed = iter(dataset)
    resumed.set_state(state)
    assert _take(resumed, 40) == expected


def test_worker_slices_split_the_shards(tmp_path):
    urls = _shards(tmp_path, 4, 2)
    seen = []
    for worker in range(2):
        dataset = streams.stream_dataset(
            urls, shard_readers.read_tar, seed=0, train=False, shuffle_buffer=0
        )
        dataset.set_slice(slice(worker, None, 2))  # what grain's mp_prefetch does per worker
        seen.append([e["caption"] for e in dataset])
    assert seen == [["0-0", "0-1", "2-0", "2-1"], ["1-0", "1-1", "3-0", "3-1"]]
