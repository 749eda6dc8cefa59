"""Readers of one shard, as a stream of source examples: WebDataset tar files and Parquet files.

A reader is ``(url, start) -> iterator of examples``, starting at the shard's ``start``-th
item, so that a resumed pipeline reopens a shard and goes on where it stopped without
decoding what it skips. Damage ends a shard with one :func:`mmtx.data.bad_examples.bad`
item (``truncated tar`` / ``truncated parquet``) after the examples read before it; the
pipeline counts it and moves on to the next shard.
"""

from __future__ import annotations

import itertools
import tarfile
import zlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from mmtx.data import bad_examples, files, records

ShardReader = Callable[[str, int], Iterator[dict[str, Any]]]
# Errors of a damaged or cut-short tar stream (gzip's come as zlib.error / EOFError).
_TAR_ERRORS = (tarfile.TarError, EOFError, zlib.error, OSError)


class _TruncatedTarError(tarfile.TarError):
    """The tar stream ended without its end-of-archive blocks."""


class _CheckedTarInfo(tarfile.TarInfo):
    """A ``TarInfo`` whose reading fails on a header cut short or missing (the stream ended
    without the two zero blocks that end an archive), which ``tarfile`` takes for the end."""

    @classmethod
    def fromtarfile(cls, tar: tarfile.TarFile) -> tarfile.TarInfo:
        try:
            return super().fromtarfile(tar)
        except (tarfile.EmptyHeaderError, tarfile.TruncatedHeaderError) as error:
            tar.mmtx_truncated = error  # type: ignore[attr-defined]
            raise


def _tar_samples(url: str) -> Iterator[dict[str, Any]]:
    """Every sample of the tar shard at ``url``: consecutive members sharing a key, as
    :func:`mmtx.data.records.example_from_fields` makes them, then one ``truncated tar`` item
    if the stream breaks. A member cut short loses the sample it belongs to; an archive cut
    at a header (or missing its end blocks) keeps every whole sample before the cut."""
    key, fields = None, {}
    failure: Exception | None = None
    try:
        with (
            files.open_binary(url) as stream,
            tarfile.open(fileobj=stream, mode="r|*", tarinfo=_CheckedTarInfo) as tar,
        ):
            for member in tar:
                if not member.isfile():
                    continue
                member_key, extension = records.extension_of(member.name)
                if member_key.rpartition("/")[2].startswith("__"):
                    continue  # __key__-style bookkeeping members
                if key is not None and member_key != key:
                    yield records.example_from_fields(fields, f"{url}/{key}")
                    fields = {}
                key = member_key
                data = tar.extractfile(member)
                fields[extension] = data.read() if data is not None else b""
            cut = getattr(tar, "mmtx_truncated", None)
            if cut is not None:
                failure = _TruncatedTarError(f"the archive ends without its end blocks ({cut})")
    except _TAR_ERRORS as error:
        failure, fields = error, {}  # the sample being read is incomplete
    if key is not None and fields:
        yield records.example_from_fields(fields, f"{url}/{key}")
    if failure is not None:
        where = f"{url}/{key}" if key is not None else url
        yield bad_examples.bad("truncated tar", f"{where} ({type(failure).__name__}: {failure})")


def read_tar(url: str, start: int = 0) -> Iterator[dict[str, Any]]:
    """The samples of a WebDataset tar shard from the ``start``-th on (see the module)."""
    return itertools.islice(_tar_samples(url), start, None)


class MissingColumnError(ValueError):
    """A Parquet file lacks a column the config names: a config error, not bad data."""


def parquet_reader(columns: Mapping[str, str]) -> ShardReader:
    """A reader of Parquet shards whose columns ``columns`` (role -> column: ``image``,
    ``text``, ``audio``, ``label``) hold an example's fields: image / audio bytes (or a
    ``{"bytes": ...}`` struct, as Hugging Face datasets store images), caption text, integer
    label. img2dataset's Parquet output has ``jpg`` and ``caption``."""
    wanted = {role: column for role, column in columns.items() if column}

    def read(url: str, start: int = 0) -> Iterator[dict[str, Any]]:
        return _parquet_rows(url, wanted, start)

    return read


def _parquet_rows(url: str, columns: Mapping[str, str], start: int) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    row = 0
    try:
        with files.open_binary(url) as stream:
            parquet = pq.ParquetFile(stream)
            missing = [c for c in columns.values() if c not in parquet.schema_arrow.names]
            if missing:
                raise MissingColumnError(
                    f"{url}: no column {missing[0]!r} (its columns: "
                    f"{parquet.schema_arrow.names}); set config.data.columns"
                )
            for group in range(parquet.num_row_groups):
                rows_in_group = parquet.metadata.row_group(group).num_rows
                if row + rows_in_group <= start:
                    row += rows_in_group  # skipped without reading its pages
                    continue
                table = parquet.read_row_group(group, columns=list(columns.values()))
                values = {role: table.column(c).to_pylist() for role, c in columns.items()}
                for i in range(rows_in_group):
                    if row >= start:
                        yield _parquet_example({r: v[i] for r, v in values.items()}, url, row)
                    row += 1
    except MissingColumnError:
        raise
    except Exception as error:  # pyarrow's ArrowInvalid / OSError on a damaged file
        yield bad_examples.bad("truncated parquet", f"{url} row {row} ({error})")


def _parquet_example(values: Mapping[str, Any], url: str, row: int) -> dict[str, Any]:
    example: dict[str, Any] = {records.NAME_KEY: f"{url}:{row}"}
    for role, value in values.items():
        if isinstance(value, dict):  # {"bytes": b"...", "path": "..."}
            value = value.get("bytes")
        if role == "text":
            example["caption"] = value if value is not None else ""
        elif role == "label":
            if value is None:
                return bad_examples.bad("bad label", f"{url}:{row}")
            example["label"] = value
        elif value is not None:
            example[role] = value
            if role == "audio":
                example[records.AUDIO_FORMAT_KEY] = "wav"
    return example
