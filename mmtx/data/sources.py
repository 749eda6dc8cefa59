"""Your own data: which source ``config.data.source`` / ``config.data.eval_source`` names.

=======================  ===============================  =====================================
``csv:PATH``             open_clip's CSV (random access)  :mod:`mmtx.data.csv_source`
``folder:DIR``           a folder per class (random)      :mod:`mmtx.data.folder_source`
``arrayrecord:PATTERN``  ArrayRecord files (random)       :mod:`mmtx.data.arrayrecord_source`
``wds:PATTERN``          WebDataset tar shards (stream)   :mod:`mmtx.data.streams`
``parquet:PATTERN``      Parquet files (stream)           :mod:`mmtx.data.streams`
=======================  ===============================  =====================================

``PATTERN``: a file, a directory, a glob or a brace pattern (``gs://b/cc3m/{00000..00331}.tar``),
local or any fsspec URL (:mod:`mmtx.data.files`).

What is evaluated: ``config.data.eval_source`` when set. Otherwise, for a random-access
training source with ``config.data.holdout = N > 0``, its last ``N`` examples, which training
then never sees; else nothing (a stream has no held-out part), and the run says so.

The kinds (:data:`FILE_KINDS`, ...) and :func:`source_kind` live in
:mod:`mmtx.data.source_kinds`, without grain, for the config layer; they are re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import ml_collections

from mmtx.data import files, shard_readers
from mmtx.data.arrayrecord_source import ARRAYRECORD_EXTENSIONS, ArrayRecordSource
from mmtx.data.csv_source import CsvSource
from mmtx.data.folder_source import FolderSource
from mmtx.data.source_kinds import FILE_KINDS, RANDOM_ACCESS_KINDS, STREAM_KINDS, source_kind

# The columns img2dataset's Parquet output holds the image and caption in.
PARQUET_COLUMNS = {"image": "jpg", "text": "caption"}


def location_of(spec: str) -> str:
    """``"csv:/data/train.csv"`` -> ``"/data/train.csv"``."""
    return spec.partition(":")[2]


@dataclass(frozen=True)
class StreamSource:
    """A streamed source: its shard files in order and the reader of one shard. Like the
    random-access sources it says what evaluation can use: no class names (unless
    ``config.eval.classnames``), one caption per example."""

    urls: tuple[str, ...]
    reader: shard_readers.ShardReader
    class_names: tuple[str, ...] = ()
    multiple_captions: bool = False
    may_lack_inputs: bool = False

    def __repr__(self) -> str:
        return f"StreamSource({len(self.urls)} shards, first {self.urls[0]!r})"


def _roles(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    """The roles a CSV is read for: the model's modalities, and ``label`` when the config
    names a label column."""
    roles = tuple(config.model.modalities)
    return (*roles, "label") if config.data.columns.get("label", "") else roles


def _open(config: ml_collections.ConfigDict, spec: str, rows: slice) -> Any:
    kind, location = source_kind(spec), location_of(spec)
    data = config.data
    if kind == "csv":
        return CsvSource(
            location,
            separator=data.csv_separator,
            columns=dict(data.columns),
            roles=_roles(config),
            rows=rows,
        )
    if kind == "folder":
        return FolderSource(location, rows=rows)
    if kind == "arrayrecord":
        return ArrayRecordSource(
            files.list_files(location, ARRAYRECORD_EXTENSIONS),
            rows=rows,
            columns=dict(data.columns),
        )
    if kind == "wds":
        return StreamSource(tuple(files.list_files(location, (".tar",))), shard_readers.read_tar)
    if kind == "parquet":
        columns = {
            role: data.columns.get(role, "") or PARQUET_COLUMNS.get(role, "")
            for role in _roles(config)
        }
        urls = tuple(files.list_files(location, (".parquet",)))
        return StreamSource(urls, shard_readers.parquet_reader(columns))
    raise ValueError(f"not a file source: {spec!r}; use one of {', '.join(FILE_KINDS)}")


def eval_spec(config: ml_collections.ConfigDict) -> str:
    """The source evaluation reads: ``data.eval_source``, else ``data.source`` when it is
    random access and ``data.holdout > 0`` (its held-out tail), else ``""`` (none)."""
    data = config.data
    if data.eval_source:
        return data.eval_source
    if source_kind(data.source) in RANDOM_ACCESS_KINDS and data.holdout > 0:
        return data.source
    return ""


def create_file_source(config: ml_collections.ConfigDict, split: str) -> Any | None:
    """The source of ``split`` ("train" or "eval") for a file-backed ``config.data.source``:
    a random-access source or a :class:`StreamSource`; None for "eval" when there is nothing
    to evaluate (see the module)."""
    data = config.data
    holdout = int(data.holdout) if source_kind(data.source) in RANDOM_ACCESS_KINDS else 0
    if split == "train":
        rows = slice(None, -holdout) if holdout and not data.eval_source else slice(None)
        source = _open(config, data.source, rows)
    else:
        spec = eval_spec(config)
        if not spec:
            return None
        rows = (
            slice(-holdout, None) if spec == data.source and not data.eval_source else slice(None)
        )
        source = _open(config, spec, rows)
    if not isinstance(source, StreamSource) and len(source) == 0:
        raise ValueError(f"{source!r}: no examples for {split} (config.data.holdout={holdout})")
    return source


def describe_eval(config: ml_collections.ConfigDict) -> str:
    """One line saying what evaluation reads, for the log."""
    data = config.data
    if source_kind(data.source) not in FILE_KINDS and not data.eval_source:
        return ""
    if data.eval_source:
        return f"evaluating on {data.eval_source}"
    if eval_spec(config):
        return f"evaluating on the last {data.holdout} examples of {data.source} (held out)"
    hint = (
        "set config.data.eval_source"
        if source_kind(data.source) in STREAM_KINDS
        else "set config.data.eval_source, or config.data.holdout to hold examples out"
    )
    return f"no evaluation: {data.source} has no eval data ({hint})"
