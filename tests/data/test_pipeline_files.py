"""Tests for mmtx/data/pipeline.py over file sources (csv, folder, wds, parquet, arrayrecord):
the same model inputs as the reference preprocessing, bad files skipped and counted, processes
reading every example once, and a bucket (fsspec) path."""

import collections
import io
import os
import tarfile

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from own_data import bomb_png, jpeg_bytes, write_csv_dataset

from mmtx import config as config_lib
from mmtx.data import pack
from mmtx.data.bad_examples import SkipTally
from mmtx.data.pipeline import create_dataset, create_source, make_preprocess
from mmtx.data.preprocessing import decode_image
from mmtx.data.tokenizer import ByteTokenizer


def _config(source, **data):
    config = config_lib.load_config("configs/csv_image_text.py:tiny")
    config.model.image.image_size = 32
    config.data.source = source
    config.data.holdout = 0
    config.data.num_threads = 1
    config.data.shuffle_buffer = 8
    config.data.update(data)
    config_lib.validate(config)
    return config


def _batches(config, n, *, batch_size=4, train=True, split="train", **kwargs):
    dataset = create_dataset(
        config, split, ByteTokenizer(), batch_size=batch_size, train=train, **kwargs
    )
    tally = SkipTally(iter(dataset))
    try:
        out = [next(tally) for _ in range(n)] if n else list(tally)
        return out, tally.counts
    finally:
        tally.close()


@pytest.fixture(scope="module")
def csv_path(tmp_path_factory):
    return write_csv_dataset(str(tmp_path_factory.mktemp("csv")), 24, image_size=48)


def test_csv_batches_equal_the_reference_preprocessing(csv_path):
    config = _config(f"csv:{csv_path}")
    (batch,), _ = _batches(config, 1, batch_size=6, train=False)
    # Reference: the files decoded one by one and put through make_preprocess.
    base = os.path.dirname(csv_path)
    rows = [line.split("\t") for line in open(csv_path).read().splitlines()[1:]]
    reference = make_preprocess(config, ByteTokenizer())
    for i in range(6):
        with open(os.path.join(base, rows[i][0]), "rb") as f:
            pixels = decode_image(f.read(), 32)
        expected = reference({"image": pixels, "caption": rows[i][1]})
        np.testing.assert_array_equal(batch["image"][i], expected["image"])
        np.testing.assert_array_equal(batch["text"][i], expected["text"])
    assert set(batch) == {"image", "text", "text_mask"}


def test_bad_files_are_skipped_counted_and_named(tmp_path, csv_path):
    base = os.path.dirname(csv_path)
    rows = open(csv_path).read().splitlines()
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (tmp_path / "bomb.png").write_bytes(bomb_png())
    first = rows[1].split("\t")
    extra = [
        f"{tmp_path}/broken.jpg\ta broken file",
        f"{tmp_path}/bomb.png\ta huge image",
        f"{tmp_path}/gone.jpg\ta missing file",
        f"{os.path.join(base, first[0])}\t   ",
    ]
    damaged = os.path.join(base, "damaged.csv")  # beside the images its rows name
    with open(damaged, "w") as f:
        f.write("\n".join(rows[:3] + extra + rows[3:]) + "\n")
    config = _config(f"csv:{damaged}")
    batches, counts = _batches(config, 0, batch_size=5, train=False)
    assert sum(len(b["text"]) for b in batches) == 24
    assert counts == {
        "missing file": 1,
        "undecodable image": 1,
        "image too large": 1,
        "empty caption": 1,
    }


def _cut(path, at):
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:at])


def test_wds_shards_truncated_and_cut_members_are_skipped(tmp_path, csv_path):
    shards = tmp_path / "shards"
    pack.pack(f"csv:{csv_path}", f"wds:{shards}", shard_size=8)
    with tarfile.open(shards / "00001.tar") as tar:
        members = tar.getmembers()
    _cut(shards / "00001.tar", members[6].offset + 100)  # inside sample 3's header: 3 kept
    # Sample "a" whole, then sample "b" whose jpg is cut short (and the archive with it).
    with tarfile.open(shards / "00000a.tar", "w") as tar:
        for key in ("a", "b"):
            for ext, data in (("jpg", jpeg_bytes(np.zeros((8, 8, 3)))), ("txt", b"fine")):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    with tarfile.open(shards / "00000a.tar") as tar:
        members = tar.getmembers()
    _cut(shards / "00000a.tar", members[2].offset_data + 10)
    config = _config(f"wds:{shards}")
    batches, counts = _batches(config, 0, batch_size=4, train=False)
    assert counts == {"truncated tar": 2}
    assert sum(len(b["text"]) for b in batches) == 8 + 1 + 3 + 8


def test_two_processes_read_each_csv_example_once(csv_path):
    config = _config(f"csv:{csv_path}")

    def examples(batches):
        return collections.Counter(
            image.tobytes() + text.tobytes()
            for b in batches
            for image, text in zip(b["image"], b["text"], strict=True)
        )

    together = collections.Counter()
    for process in range(2):  # 3 x 4 examples each: one epoch of 24 between them
        batches, _ = _batches(config, 3, batch_size=4, process_index=process, process_count=2)
        together += examples(batches)
    alone, _ = _batches(config, 3, batch_size=8)  # one process, the same global batches
    assert together == examples(alone) and sum(together.values()) == 24
    assert len(together) == 24  # every example once (augmented as one process would)


def test_holdout_and_streams_from_a_bucket(tmp_path, csv_path):
    config = _config(f"csv:{csv_path}", holdout=5)
    assert len(create_source(config, "train")) == 19 and len(create_source(config, "eval")) == 5
    (_, counts) = _batches(config, 0, batch_size=5, train=False, split="eval")
    pack.pack(f"csv:{csv_path}", "wds:memory://pipeline_test/shards", shard_size=10)
    table = pa.table({"jpg": [jpeg_bytes(np.ones((8, 8, 3)))] * 3, "caption": ["a", "b", "c"]})
    with fsspec.open("memory://pipeline_test/pq/0.parquet", "wb") as f:
        pq.write_table(table, f)
    for source, expected in (
        ("wds:memory://pipeline_test/shards/{00000..00002}.tar", 24),
        ("parquet:memory://pipeline_test/pq", 3),
    ):
        batches, counts = _batches(_config(source), 0, batch_size=4, train=False)
        assert sum(len(b["text"]) for b in batches) == expected and counts == {}
    stream = _config("wds:memory://pipeline_test/shards")
    assert create_source(stream, "eval") is None
    with pytest.raises(ValueError, match=r"no eval data.*set config\.data\.eval_source"):
        _batches(stream, 0, train=False, split="eval")


@pytest.mark.parametrize("kind", ["csv", "wds"])
def test_a_restored_iterator_gives_the_same_batches(tmp_path, csv_path, kind):
    source = f"csv:{csv_path}"
    if kind == "wds":
        pack.pack(source, f"wds:{tmp_path}/shards", shard_size=5)
        source = f"wds:{tmp_path}/shards"
    config = _config(source, prefetch=2)
    dataset = create_dataset(config, "train", ByteTokenizer(), batch_size=4, train=True)
    first = SkipTally(iter(dataset))
    for _ in range(4):
        next(first)
    state = first.get_state()
    expected = [next(first) for _ in range(9)]  # past an epoch of 24
    first.close()
    resumed = SkipTally(iter(dataset))
    resumed.set_state(state)
    got = [next(resumed) for _ in range(9)]
    resumed.close()
    for want, have in zip(expected, got, strict=True):
        for key in want:
            np.testing.assert_array_equal(have[key], want[key], err_msg=key)


def test_audio_files_decode_at_their_own_rate_and_bad_ones_are_skipped(tmp_path):
    import scipy.io.wavfile

    from mmtx.data.preprocessing import preprocess_audio

    rng = np.random.default_rng(0)
    clips = {}
    for i in range(6):
        rate = (8000, 16000, 22050)[i % 3]
        samples = (rng.normal(size=rate // 2) * 8000).astype(np.int16)
        clips[i] = (samples, rate)
        (tmp_path / "sounds" / f"class_{i % 2}").mkdir(parents=True, exist_ok=True)
        scipy.io.wavfile.write(tmp_path / "sounds" / f"class_{i % 2}" / f"{i}.wav", rate, samples)
    (tmp_path / "sounds" / "class_0" / "00_broken.wav").write_bytes(b"RIFF\x00\x00 no wav")
    config = _config(f"folder:{tmp_path}/sounds")
    config.model.modalities = ("text", "audio")
    config.model.audio.num_samples = 4000
    batches, counts = _batches(config, 0, batch_size=6, train=False)
    assert counts == {"undecodable audio": 1}
    (batch,) = batches
    order = [0, 2, 4, 1, 3, 5]  # class_0's files by name, then class_1's
    for row, i in enumerate(order):
        samples, rate = clips[i]
        expected = preprocess_audio(samples, 4000, sample_rate=rate, target_rate=16000)
        np.testing.assert_array_equal(batch["audio"][row], expected)
