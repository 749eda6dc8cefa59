"""Tests of mmtx.data.csv_source: open_clip's CSV format, columns, paths, labels, bad rows."""

import fsspec
import numpy as np
import pytest

from mmtx.data import bad_examples
from mmtx.data.csv_source import CsvSource


def _write(path, text):
    path.write_text(text)
    return str(path)


def test_reads_open_clip_format_with_relative_paths(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.jpg").write_bytes(b"A")
    (tmp_path / "b.jpg").write_bytes(b"B")
    csv = _write(
        tmp_path / "t.csv", f"filepath\ttitle\nimg/a.jpg\ta cat\n{tmp_path}/b.jpg\ta dog\n"
    )
    source = CsvSource(csv)
    assert len(source) == 2
    assert source[0]["image"] == b"A" and source[0]["caption"] == "a cat"
    assert source[1]["image"] == b"B" and source[1]["caption"] == "a dog"


def test_other_separator_columns_quoted_fields_and_label_names(tmp_path):
    for name in "xyz":
        (tmp_path / f"{name}.wav").write_bytes(name.encode())
    csv = _write(
        tmp_path / "t.csv",
        'clip,text,kind\nx.wav,"one, two",dog\ny.wav,"line\nbreak",cat\nz.wav,three,dog\n',
    )
    source = CsvSource(
        csv,
        separator=",",
        columns={"audio": "clip", "text": "text", "label": "kind"},
        roles=("audio", "text", "label"),
    )
    assert source.class_names == ("cat", "dog")
    assert [int(source[i]["label"]) for i in range(3)] == [1, 0, 1]
    assert source[1]["caption"] == "line\nbreak" and source[0]["caption"] == "one, two"
    assert source[2]["audio"] == b"z" and source[2]["_audio_format"] == "wav"
    held_out = CsvSource(
        csv,
        separator=",",
        columns={"audio": "clip", "label": "kind"},
        roles=("audio", "label"),
        rows=slice(-1, None),
    )
    assert len(held_out) == 1 and held_out.class_names == ("cat", "dog")
    assert held_out[0]["label"] == np.int32(1)


def test_missing_file_is_a_bad_example_and_errors_name_columns(tmp_path):
    csv = _write(tmp_path / "t.csv", "filepath\ttitle\ngone.jpg\tx\n")
    item = CsvSource(csv)[0]
    assert bad_examples.is_bad(item) and item["_name"].endswith("gone.jpg")
    with pytest.raises(ValueError, match=r"no column .path.*filepath"):
        CsvSource(csv, columns={"image": "path"})
    with pytest.raises(ValueError, match="no column for the audio role"):
        CsvSource(csv, roles=("audio",))
    bad_row = _write(tmp_path / "b.csv", "filepath\ttitle\na.jpg\n")
    with pytest.raises(ValueError, match="line 2: 1 fields"):
        CsvSource(bad_row)


def test_reads_through_an_fsspec_filesystem():
    fs = fsspec.filesystem("memory")
    fs.pipe("/csv_test/imgs/1.jpg", b"ONE")
    fs.pipe("/csv_test/train.csv", b"filepath\ttitle\nimgs/1.jpg\ta bird\n")
    source = CsvSource("memory://csv_test/train.csv")
    assert source[0]["image"] == b"ONE" and source[0]["caption"] == "a bird"
