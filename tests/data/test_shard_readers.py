"""Tests of mmtx.data.shard_readers: WebDataset tar shards and Parquet files, damage included."""

import io
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq

from mmtx.data import bad_examples, shard_readers


def write_tar(path, samples):
    """``samples``: [(key, {ext: bytes})] -> a tar shard, members in order, as TarWriter."""
    with tarfile.open(path, "w") as tar:
        for key, fields in samples:
            for extension, data in fields.items():
                info = tarfile.TarInfo(f"{key}.{extension}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return str(path)


def _samples(n, size=700):
    return [(f"k{i:03d}", {"jpg": bytes([i]) * size, "txt": f"cap {i}".encode()}) for i in range(n)]


def _captions(items):
    return [i["caption"] if not bad_examples.is_bad(i) else "BAD" for i in items]


def test_groups_members_by_key_and_starts_anywhere(tmp_path):
    shard = write_tar(
        tmp_path / "s.tar", [*_samples(4), ("dir/x.y", {"txt": b"dotted", "json": b"{}"})]
    )
    items = list(shard_readers.read_tar(shard))
    assert _captions(items) == ["cap 0", "cap 1", "cap 2", "cap 3", "dotted"]
    assert items[2]["image"] == bytes([2]) * 700 and items[2]["_name"] == f"{shard}/k002"
    assert _captions(shard_readers.read_tar(shard, 3)) == ["cap 3", "dotted"]


def test_damage_ends_the_shard_with_one_bad_item(tmp_path):
    data = open(write_tar(tmp_path / "s.tar", _samples(3)), "rb").read()
    # Each sample: 512 header + 512 txt + 512 header + 1024 jpg = 2560 bytes.
    cases = {
        2560 + 1000: ["cap 0", "BAD"],  # cut inside sample 1's jpg: sample 1 lost
        2 * 2560: ["cap 0", "cap 1", "BAD"],  # cut at a header: whole samples kept
        2 * 2560 + 100: ["cap 0", "cap 1", "BAD"],  # cut inside a header
        3 * 2560 + 1024: ["cap 0", "cap 1", "cap 2"],  # the end blocks kept, padding cut
    }
    for cut, expected in cases.items():
        path = tmp_path / f"cut{cut}.tar"
        path.write_bytes(data[:cut])
        items = list(shard_readers.read_tar(str(path)))
        assert _captions(items) == expected, cut
        if expected[-1] == "BAD":
            assert items[-1][bad_examples.BAD_KEY] == bad_examples.REASONS.index("truncated tar")
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"not a tar at all" * 100)
    assert _captions(shard_readers.read_tar(str(garbage))) == ["BAD"]


def test_parquet_rows_from_any_row_and_damage(tmp_path):
    table = pa.table(
        {
            "jpg": [bytes([i]) for i in range(7)],
            "caption": [f"cap {i}" for i in range(7)],
            "url": ["u"] * 7,
        }
    )
    path = str(tmp_path / "p.parquet")
    pq.write_table(table, path, row_group_size=3)
    read = shard_readers.parquet_reader({"image": "jpg", "text": "caption"})
    assert _captions(read(path, 0)) == [f"cap {i}" for i in range(7)]
    rows = list(read(path, 4))
    assert _captions(rows) == ["cap 4", "cap 5", "cap 6"] and rows[0]["image"] == b"\x04"
    damaged = tmp_path / "d.parquet"
    damaged.write_bytes(open(path, "rb").read()[:-30])
    assert _captions(read(str(damaged), 0)) == ["BAD"]
