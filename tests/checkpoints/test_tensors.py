"""Tests for mmtx/checkpoints/tensors.py: reading safetensors and npz with numpy, a bad file
as one line naming it (and the tensor), weights that must be finite floats, and the
missing / unexpected bookkeeping."""

from __future__ import annotations

import io
import json
import re
import struct
import zipfile

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


def safetensors_bytes(header: object, data: bytes = b"") -> bytes:
    """A safetensors file made by hand: the header's size, the header (any JSON), the data."""
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + data


def entry(dtype: str = "F32", shape: list | None = None, offsets: list | None = None) -> dict:
    return {
        "dtype": dtype,
        "shape": [2] if shape is None else shape,
        "data_offsets": offsets or [0, 8],
    }


def assert_one_line_error(path, pattern: str) -> str:
    """Reads ``path``; its CheckpointImportError is one line naming the file and matching."""
    with pytest.raises(CheckpointImportError) as error:
        read_tensors(str(path))
    message = str(error.value)
    assert "\n" not in message and message.startswith(str(path)), message
    assert re.search(pattern, message), message
    return message


@pytest.mark.parametrize(
    "content, pattern",
    [
        (b"", r"not a safetensors file \(0 bytes, fewer than the 8"),
        (b"\x05\x00\x00", r"not a safetensors file \(3 bytes"),
        # A header size beyond the file (2^62: nothing of that size is read or allocated).
        (
            struct.pack("<Q", 2**62) + b"{}",
            r"cut short \(its header is said to be 4611686018427387904",
        ),
        (
            struct.pack("<Q", 100) + b"{}",
            r"cut short \(its header is said to be 100 bytes; .* 2 after",
        ),
        (safetensors_bytes([1, 2]), r"not a safetensors file \(its header is a JSON list, not an"),
        (safetensors_bytes("w"), r"its header is a JSON str, not an object"),
    ],
)
def test_safetensors_whose_header_is_unreadable(tmp_path, content, pattern):
    path = tmp_path / "w.safetensors"
    path.write_bytes(content)
    assert_one_line_error(path, pattern)


@pytest.mark.parametrize(
    "bad, pattern",
    [
        ([1, 2], r"tensor w has a header entry \[1, 2\], not an object"),
        ({"shape": [2], "data_offsets": [0, 8]}, "tensor w has no dtype in the header"),
        ({"dtype": "F32", "data_offsets": [0, 8]}, "tensor w has no shape in the header"),
        ({"dtype": "F32", "shape": [2]}, "tensor w has no data_offsets in the header"),
        (entry(dtype="C64"), "tensor w has unsupported dtype 'C64'"),
        (entry(dtype=["F32"]), r"tensor w has unsupported dtype \['F32'\]"),
        (entry(shape=[-2]), r"tensor w has a malformed shape \[-2\]"),
        (entry(shape=[2.0]), r"tensor w has a malformed shape \[2\.0\]"),
        (entry(offsets=[0]), r"tensor w has malformed data_offsets \[0\]"),
        (entry(offsets=[0, True]), r"tensor w has malformed data_offsets \[0, True\]"),
        (entry(offsets=[8, 0]), r"tensor w has data_offsets \[8, 0\], which end before they start"),
        (
            entry(offsets=[8, 16]),
            r"tensor w ends at byte 16 of the data, which has 12 \(the file is",
        ),
        (entry(offsets=[0, 12]), r"tensor w has 12 bytes, but shape \(2,\) of F32 needs 8"),
        (entry(shape=[3, 1]), r"tensor w has 8 bytes, but shape \(3, 1\) of F32 needs 12"),
    ],
)
def test_safetensors_whose_entries_lie(tmp_path, bad, pattern):
    path = tmp_path / "w.safetensors"
    good = entry(offsets=[8, 12], shape=[1])
    path.write_bytes(safetensors_bytes({"__metadata__": {}, "ok": good, "w": bad}, bytes(12)))
    assert_one_line_error(path, "^" + re.escape(str(path)) + ": " + pattern)


def test_safetensors_cut_short_names_the_first_tensor_past_the_end(tmp_path):
    path = tmp_path / "w.safetensors"
    rng = np.random.default_rng(0)
    safetensors.numpy.save_file(
        {"a": rng.normal(size=(4, 4)).astype(np.float32), "b": np.ones(64, np.float32)}, str(path)
    )
    np.testing.assert_array_equal(read_tensors(str(path))["b"], np.ones(64))
    path.write_bytes(path.read_bytes()[:-100])
    assert_one_line_error(path, r": tensor b ends at byte 320 of the data, which has 220 \(the")


def test_npz_that_is_not_a_zip_or_holds_pickles(tmp_path):
    text = tmp_path / "text.npz"
    text.write_bytes(b"not an archive")
    assert_one_line_error(text, r"is not an \.npz file \(not a zip archive, or cut short\)")
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    assert_one_line_error(empty, r"not an \.npz file")
    single = tmp_path / "single.npz"
    with open(single, "wb") as f:
        np.save(f, np.ones(3))
    assert_one_line_error(single, r"is a single \.npy array, not an \.npz archive")

    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, kernel=np.ones(2), params=np.array([{"a": 1}], dtype=object))
    assert_one_line_error(pickled, r": tensor params is a pickled \(object\) array, which mmtx")

    whole = tmp_path / "whole.npz"
    np.savez(whole, kernel=np.ones((50, 50)))
    cut = tmp_path / "cut.npz"
    cut.write_bytes(whole.read_bytes()[:-30])
    assert_one_line_error(cut, r"not an \.npz file \(not a zip archive, or cut short\)")


def npz_with_member(path, name: str, content: bytes) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(name, content)


def test_npz_member_that_lies_about_its_size_is_not_allocated(tmp_path):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (2**40,)}
    )
    huge = tmp_path / "huge.npz"
    npz_with_member(huge, "params/t.npy", header.getvalue() + bytes(16))
    assert_one_line_error(huge, r": tensor params/t has 16 bytes, but shape \(1099511627776,\) of")
    other = tmp_path / "other.npz"
    npz_with_member(other, "notes.txt", b"hello")
    assert_one_line_error(other, r": notes\.txt is not a \.npy array")


def test_source_refuses_non_finite_and_integer_weights():
    weights = {
        "logit_scale": np.asarray(np.nan, np.float32),
        "visual.proj": np.asarray([[1.0, np.inf], [-np.inf, np.nan]], np.float32),
        "kernel": np.arange(4, dtype=np.int32).reshape(2, 2),
        "mask": np.ones(2, np.bool_),
        "big": np.asarray([1e300, 1.0]),
        "half": np.asarray([1.0, np.inf], np.float16),
        "bf16": np.asarray([1.0, 2.0], ml_dtypes.bfloat16),
        "fine": np.asarray([1.0, 2.0]),
        "position_ids": np.arange(3),
    }
    source = TensorSource(weights, family="open_clip", path="w.safetensors")
    expected = {
        "logit_scale": "w.safetensors: tensor logit_scale has 1 non-finite value (NaN or inf); "
        "a model with them computes NaN",
        "visual.proj": "w.safetensors: tensor visual.proj has 3 non-finite values (NaN or inf); "
        "a model with them computes NaN",
        "kernel": "w.safetensors: tensor kernel has dtype int32, but a weight is floating point",
        "mask": "w.safetensors: tensor mask has dtype bool, but a weight is floating point",
        "big": "w.safetensors: tensor big has 1 value too large for float32; a model with "
        "them computes NaN",
        "half": "w.safetensors: tensor half has 1 non-finite value (NaN or inf); a model with "
        "them computes NaN",
    }
    for name, message in expected.items():
        with pytest.raises(CheckpointImportError) as error:
            source[name]
        assert str(error.value) == message
    assert source["bf16"].dtype == np.float32 and source["fine"].dtype == np.float32
    assert source.shape("kernel") == (2, 2)  # shapes are read from any tensor
    source.ignore(["position_ids"])  # buffers are never handed out
    unnamed = TensorSource({"k": np.ones(2, np.int64)}, family="hf_clip")
    with pytest.raises(CheckpointImportError, match=r"^the hf_clip checkpoint: tensor k has dtype"):
        unnamed["k"]
