"""Tests of mmtx.data.folder_source: classes from subdirectories, images and audio."""

import pytest

from mmtx.data import bad_examples
from mmtx.data.folder_source import FolderSource


def test_classes_labels_captions_and_audio(tmp_path):
    for path, data in {
        "golden_retriever/1.jpg": b"g1",
        "golden_retriever/deep/2.PNG": b"g2",
        "cat/1.wav": b"c1",
        "cat/notes.txt": b"ignored",
        "loose.jpg": b"not in a class",
    }.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(data)
    source = FolderSource(str(tmp_path))
    assert source.class_names == ("cat", "golden retriever")
    got = [(int(source[i]["label"]), source[i]["caption"]) for i in range(len(source))]
    assert got == [(0, "cat"), (1, "golden retriever"), (1, "golden retriever")]
    assert source[0]["audio"] == b"c1" and source[0]["_audio_format"] == "wav"
    assert source[1]["image"] == b"g1" and source[2]["image"] == b"g2"
    assert len(FolderSource(str(tmp_path), rows=slice(-1, None))) == 1
    (tmp_path / "cat" / "1.wav").unlink()
    assert bad_examples.is_bad(source[0])


def test_a_folder_without_classes_is_an_error(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="no class subdirectories"):
        FolderSource(str(tmp_path))
