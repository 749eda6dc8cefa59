"""Tests of mmtx.data.tf_example against TensorFlow's own tf.train.Example serialization."""

import numpy as np
import pytest

from mmtx.data import tf_example

tf = pytest.importorskip("tensorflow")  # installed with the dev extras ('.[dev,tfds]')


def _serialized(features):
    def feature(value):
        if isinstance(value, list) and value and isinstance(value[0], bytes):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=value))
        if isinstance(value, list) and value and isinstance(value[0], float):
            return tf.train.Feature(float_list=tf.train.FloatList(value=value))
        return tf.train.Feature(int64_list=tf.train.Int64List(value=value))

    example = tf.train.Example(
        features=tf.train.Features(feature={k: feature(v) for k, v in features.items()})
    )
    return example.SerializeToString()


def test_parses_what_tensorflow_writes():
    features = {
        "image/encoded": [b"\xff\xd8jpeg bytes", b""],
        "caption": [b"a dog on a sofa", "ein Hünd".encode()],
        "label": [7, -3, 2**40],
        "scores": [0.5, -1.25, 3e9],
        "empty": [],
    }
    parsed = tf_example.parse_example(_serialized(features))
    assert parsed["image/encoded"] == [b"\xff\xd8jpeg bytes", b""]
    assert parsed["caption"] == [b"a dog on a sofa", "ein Hünd".encode()]
    np.testing.assert_array_equal(parsed["label"], np.asarray([7, -3, 2**40], np.int64))
    np.testing.assert_array_equal(parsed["scores"], np.asarray([0.5, -1.25, 3e9], np.float32))
    assert len(parsed["empty"]) == 0


def test_rejects_other_bytes():
    record = _serialized({"caption": [b"x"]})
    for junk in (record[:-3], b"\x08\x01", b"\x0a\x05abc"):
        with pytest.raises(ValueError):
            tf_example.parse_example(junk)
