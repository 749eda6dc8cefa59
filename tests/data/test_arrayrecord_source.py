"""Tests of mmtx.data.arrayrecord_source: mmtx records in ArrayRecord files."""

import pytest

from mmtx.data import records
from mmtx.data.arrayrecord_source import ArrayRecordSource
from mmtx.data.bad_examples import REASONS


def test_reads_records_and_marks_foreign_ones_bad(tmp_path):
    from array_record.python.array_record_module import ArrayRecordWriter

    writer = ArrayRecordWriter(str(tmp_path / "x.array_record"), "group_size:1")
    writer.write(records.encode_record({"txt": b"ok", "jpg": b"J"}))
    writer.write(b"a tf.train.Example or anything else")
    writer.close()
    source = ArrayRecordSource([str(tmp_path / "x.array_record")])
    assert source[0]["caption"] == "ok" and source[1]["_bad"] == REASONS.index("bad record")


def test_reads_tf_train_examples_with_default_or_configured_features(tmp_path):
    tf = pytest.importorskip("tensorflow")  # installed with the dev extras ('.[dev,tfds]')
    from array_record.python.array_record_module import ArrayRecordWriter

    def example(**features):
        def feature(v):
            if isinstance(v, int):
                return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=v))

        features = {k: feature(v) for k, v in features.items()}
        return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()

    writer = ArrayRecordWriter(str(tmp_path / "tf.array_record"), "group_size:1")
    writer.write(example(**{"image/encoded": [b"IMG"], "caption": [b"one", b"two"], "label": 4}))
    writer.write(example(photo=[b"P"], alt_text=[b"custom"], audio=[b"fLaC..."]))
    writer.close()
    paths = [str(tmp_path / "tf.array_record")]
    first = ArrayRecordSource(paths)[0]
    assert first["image"] == b"IMG" and first["caption"] == ["one", "two"]
    assert first["label"] == 4
    second = ArrayRecordSource(paths, columns={"image": "photo", "text": "alt_text"})[1]
    assert second["image"] == b"P" and second["caption"] == "custom"
    assert second["audio"] == b"fLaC..." and second["_audio_format"] == "flac"
