"""Tests of mmtx.data.arrayrecord_source: mmtx records in ArrayRecord files."""

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
