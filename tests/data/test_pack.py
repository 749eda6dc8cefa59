"""Tests of mmtx.data.pack: shards from a CSV or a folder, as other WebDataset readers read them."""

import tarfile

import fsspec
import pytest

from mmtx.data import pack
from mmtx.data.arrayrecord_source import ArrayRecordSource


def _reference_wds_read(path):
    """WebDataset's rule, written out: members in order, a sample = consecutive members with
    the same key (the name up to the file name's first dot), fields by extension."""
    samples = []
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            directory, _, base = member.name.rpartition("/")
            stem, _, extension = base.partition(".")
            key = f"{directory}/{stem}" if directory else stem
            if not samples or samples[-1]["__key__"] != key:
                samples.append({"__key__": key})
            samples[-1][extension] = tar.extractfile(member).read()
    return samples


def _csv(tmp_path, rows, header="filepath\ttitle"):
    (tmp_path / "img").mkdir(exist_ok=True)
    lines = [header]
    for name, caption in rows:
        if name:
            (tmp_path / "img" / name).write_bytes(f"bytes of {name}".encode())
        lines.append(f"img/{name or 'gone.jpg'}\t{caption}")
    path = tmp_path / "train.csv"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_csv_to_wds_shards_readable_as_webdataset(tmp_path):
    csv = _csv(tmp_path, [(f"{i}.jpg", f"caption {i}") for i in range(5)] + [(None, "lost")])
    result = pack.pack(f"csv:{csv}", f"wds:{tmp_path}/out", shard_size=2)
    assert result == {"examples": 5, "shards": 3, "skipped": {"missing file": 1}}
    samples = [s for i in range(3) for s in _reference_wds_read(tmp_path / f"out/{i:05d}.tar")]
    assert [s["__key__"] for s in samples] == [f"{i:09d}" for i in range(5)]
    assert samples[3] == {"__key__": "000000003", "jpg": b"bytes of 3.jpg", "txt": b"caption 3"}
    with pytest.raises(FileExistsError, match=r"already holds \.tar shards"):
        pack.pack(f"csv:{csv}", f"wds:{tmp_path}/out")


def test_folder_to_arrayrecord_round_trip(tmp_path):
    for cls, files in {"cat": ["a.png"], "dog": ["b.jpg", "c.jpg"]}.items():
        (tmp_path / "pets" / cls).mkdir(parents=True)
        for name in files:
            (tmp_path / "pets" / cls / name).write_bytes(name.encode())
    result = pack.pack(f"folder:{tmp_path}/pets", f"arrayrecord:{tmp_path}/ar", shard_size=2)
    assert result == {"examples": 3, "shards": 2, "skipped": {}}
    source = ArrayRecordSource(sorted(str(p) for p in (tmp_path / "ar").iterdir()))
    got = [(s["image"], s["caption"], int(s["label"])) for s in (source[i] for i in range(3))]
    assert got == [(b"a.png", "cat", 0), (b"b.jpg", "dog", 1), (b"c.jpg", "dog", 1)]


def test_command_line_and_bucket_output(tmp_path, capsys):
    csv = _csv(tmp_path, [("1.jpg", "one")])
    assert pack.main(["--from", f"csv:{csv}", "--to", "wds:memory://pack_test/out"]) == 0
    assert "wrote 1 examples in 1 shards" in capsys.readouterr().out
    with fsspec.open("memory://pack_test/out/00000.tar", "rb") as f:
        data = f.read()
    (tmp_path / "copy.tar").write_bytes(data)
    assert _reference_wds_read(tmp_path / "copy.tar")[0]["txt"] == b"one"
    assert pack.main(["--from", f"tsv:{csv}", "--to", "wds:x"]) == 2
    assert "--from must be" in capsys.readouterr().err
