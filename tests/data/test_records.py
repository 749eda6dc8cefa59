"""Tests of mmtx.data.records: field names, examples from fields, ArrayRecord records, audio."""

import io

import numpy as np
import pytest
import scipy.io.wavfile

from mmtx.data import bad_examples, records


def test_extension_of_splits_at_the_first_dot_of_the_file_name():
    assert records.extension_of("000001.jpg") == ("000001", "jpg")
    assert records.extension_of("dir.v2/abc.seg.JPG") == ("dir.v2/abc", "seg.jpg")
    assert records.extension_of("README") == ("README", "")


def test_example_from_fields_maps_extensions_to_roles():
    example = records.example_from_fields(
        {"png": b"P", "jpg": b"J", "txt": "café".encode(), "cls": b" 7\n", "json": b"{}"}, "s/1"
    )
    assert example["image"] == b"J"  # jpg before png
    assert example["caption"] == "café"
    assert example["label"] == 7 and example["label"].dtype == np.int32
    assert example[records.NAME_KEY] == "s/1" and "json" not in example
    audio = records.example_from_fields({"flac": b"F"}, "a")
    assert audio["audio"] == b"F" and audio[records.AUDIO_FORMAT_KEY] == "flac"
    assert bad_examples.is_bad(records.example_from_fields({"cls": b"dog"}, "x"))


def test_record_round_trip_and_rejects_other_bytes():
    fields = {"jpg": b"\xff\xd8", "txt": b"a dog"}
    assert records.decode_record(records.encode_record(fields)) == fields
    for junk in (b"\x01\x02garbage", records.encode_record({"jpg": b"x"})[:-1]):
        with pytest.raises(ValueError, match="not an mmtx record"):
            records.decode_record(junk)


def test_decode_audio_reads_wav_at_its_rate():
    samples = (np.sin(np.arange(800) / 5) * 20000).astype(np.int16)
    buffer = io.BytesIO()
    scipy.io.wavfile.write(buffer, 8000, samples)
    decoded, rate = records.decode_audio(buffer.getvalue(), "wav")
    assert rate == 8000
    np.testing.assert_array_equal(decoded, samples)
    with pytest.raises(ValueError):
        records.decode_audio(b"RIFF....not a wav", "wav")
