"""Tests of mmtx.data.files: brace expansion, listing and reading, local and through fsspec."""

import fsspec
import pytest

from mmtx.data import files


def test_expand_braces_ranges_lists_and_products():
    assert files.expand_braces("s/{00..02}.tar") == ["s/00.tar", "s/01.tar", "s/02.tar"]
    assert files.expand_braces("{a,b}/{8..10}") == ["a/08", "a/09", "a/10", "b/08", "b/09", "b/10"]
    assert files.expand_braces("gs://b/x.tar") == ["gs://b/x.tar"]
    assert files.expand_braces("{3..1}") == ["3", "2", "1"]


def test_list_files_local_pattern_glob_and_directory(tmp_path):
    for name in ("00000.tar", "00001.tar", "00002.tar", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    expected = [str(tmp_path / f"0000{i}.tar") for i in range(3)]
    assert files.list_files(str(tmp_path / "{00000..00002}.tar")) == expected
    assert files.list_files(str(tmp_path / "*.tar")) == expected
    assert files.list_files(str(tmp_path), (".tar",)) == expected
    with pytest.raises(FileNotFoundError, match=r"00003\.tar"):
        files.list_files(str(tmp_path / "{00002..00003}.tar"))
    with pytest.raises(FileNotFoundError, match=r"no files ending in \.parquet"):
        files.list_files(str(tmp_path), (".parquet",))


def test_memory_filesystem_lists_and_reads_with_its_protocol():
    fs = fsspec.filesystem("memory")
    for i in range(2):
        fs.pipe(f"/files_test/shards/{i:05d}.tar", f"shard {i}".encode())
    found = files.list_files("memory://files_test/shards/{00000..00001}.tar")
    assert found == ["memory://files_test/shards/00000.tar", "memory://files_test/shards/00001.tar"]
    listed = files.list_files("memory://files_test/shards", (".tar",))
    assert [files.read_bytes(u) for u in listed] == [b"shard 0", b"shard 1"]


def test_join_and_parent():
    assert files.join("gs://b/data", "img/1.jpg") == "gs://b/data/img/1.jpg"
    assert files.join("/data", "/abs/1.jpg") == "/abs/1.jpg"
    assert files.join("/data", "s3://other/1.jpg") == "s3://other/1.jpg"
    assert files.parent("gs://b/data/train.csv") == "gs://b/data"
    assert files.parent("train.csv") == "."
