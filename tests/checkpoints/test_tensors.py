"""Tests for mmtx/checkpoints/tensors.py: reading safetensors and npz with numpy, and the
missing / unexpected bookkeeping."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy

from mmtx.checkpoints.tensors import CheckpointImportError, Missing, TensorSource, read_tensors


def test_safetensors_of_every_dtype_read_as_written(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {
        "f32": rng.normal(size=(2, 3)).astype(np.float32),
        "f16": rng.normal(size=(4,)).astype(np.float16),
        "i64": np.arange(5, dtype=np.int64),
        "scalar": np.asarray(3.5, np.float32),
        "bf16": rng.normal(size=(3, 2)).astype(ml_dtypes.bfloat16),
    }
    path = str(tmp_path / "w.safetensors")
    safetensors.numpy.save_file(tensors, path)
    got = read_tensors(path)
    assert sorted(got) == sorted(tensors)
    for name in ("f32", "f16", "i64", "scalar"):
        assert got[name].dtype == tensors[name].dtype
        np.testing.assert_array_equal(got[name], tensors[name])
    assert got["bf16"].dtype == np.float32  # widened, exactly
    np.testing.assert_array_equal(got["bf16"], tensors["bf16"].astype(np.float32))


def test_npz_names_are_kept(tmp_path):
    path = str(tmp_path / "w.npz")
    np.savez(path, **{"params/img/embedding/kernel": np.ones((2, 2)), "params/t": np.zeros(1)})
    assert sorted(read_tensors(path)) == ["params/img/embedding/kernel", "params/t"]


def test_unreadable_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_tensors(str(tmp_path / "absent.safetensors"))
    other = tmp_path / "w.h5"
    other.write_bytes(b"x")
    with pytest.raises(CheckpointImportError, match=r"unknown checkpoint format '\.h5'"):
        read_tensors(str(other))
    broken = tmp_path / "w.safetensors"
    broken.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{nope")
    with pytest.raises(CheckpointImportError, match="not a safetensors file"):
        read_tensors(str(broken))


def test_source_records_missing_unexpected_and_ignored():
    source = TensorSource({"a": np.ones(2), "b": np.ones(3), "buffer": np.ones(1)}, family="x")
    assert source["a"].dtype == np.float32
    assert isinstance(source["c"], Missing)
    source.ignore(["buffer", "not there"])
    assert source.unexpected() == ["b"]
    with pytest.raises(CheckpointImportError, match=r"missing 1: c; unexpected 1: b"):
        source.check()
