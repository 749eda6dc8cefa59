"""``csv:PATH``: image-caption pairs (or audio, video, labels) listed in a CSV, open_clip's format.

open_clip trains on a CSV with a header row whose ``filepath`` column names an image file and
whose ``title`` column holds its caption, separated by tabs::

    filepath	title
    images/0001.jpg	a dog running on a beach
    images/0002.jpg	two cups of coffee on a table

mmtx reads the same file (``config.data.source = "csv:/data/train.csv"``). The separator is
``config.data.csv_separator`` (a tab by default, as open_clip's ``--csv-separator``); the
column behind each role is ``config.data.columns.<role>`` (``image``, ``text``, ``audio``,
``video``, ``label``; ``""`` = the default, ``filepath`` and ``title`` for image and text, no
column for the others). A relative file path resolves against the CSV's directory. A label
column holds integers, or names (then labels number the sorted names and the names are the
zero-shot class names). The source is random access: grain shuffles it globally and shards it
by process. Files are read when an example is, so a missing one becomes a skipped example
(:mod:`mmtx.data.bad_examples`), not a failed run.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mmtx.data import bad_examples, files, records

CSV_PREFIX = "csv:"
# open_clip's column names (its --csv-img-key, --csv-caption-key defaults).
DEFAULT_COLUMNS = {"image": "filepath", "text": "title"}
# Roles whose column holds a file path, and the example key each fills.
FILE_ROLES = {"image": "image", "audio": "audio", "video": "video"}


def read_table(path: str, separator: str) -> tuple[list[str], list[list[str]]]:
    """The CSV at ``path`` (local or an fsspec URL) -> (header, rows), every row as long as
    the header. Quoted fields (with separators or newlines inside) are read as the csv module
    reads them."""
    reader = csv.reader(io.StringIO(files.read_text(path)), delimiter=separator)
    table = [row for row in reader if row]
    if not table:
        raise ValueError(f"{path}: empty CSV (it needs a header row naming its columns)")
    header, rows = table[0], table[1:]
    for number, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise ValueError(
                f"{path}, line {number}: {len(row)} fields, the header has {len(header)} "
                f"(separator {separator!r}; set config.data.csv_separator)"
            )
    return header, rows


def label_table(values: Sequence[str]) -> tuple[np.ndarray, tuple[str, ...]]:
    """A label column -> (int32 labels, class names). Integers are the labels themselves (no
    names); otherwise the sorted distinct values are the names and each label its index."""
    try:
        return np.asarray([int(v) for v in values], np.int32), ()
    except ValueError:
        names = tuple(sorted(set(values)))
        index = {name: i for i, name in enumerate(names)}
        return np.asarray([index[v] for v in values], np.int32), names


class CsvSource:
    """A CSV of examples as a random-access grain source; ``source[i]`` is a dict.

    Each example holds, for each role the config gives a column: ``image`` / ``audio`` /
    ``video``, the file's bytes (``_audio_format``: the audio file's extension); ``caption``,
    the text; ``label``, int32. An example whose file cannot be read is a
    :func:`mmtx.data.bad_examples.bad` marker (``missing file``). Picklable.

    Args:
      path: the CSV file, local or an fsspec URL.
      separator: the field separator.
      columns: role -> column name; ``""`` or absent = :data:`DEFAULT_COLUMNS`' (or none).
      roles: the roles to read (the model's modalities, and ``label`` when wanted).
      rows: which rows (a ``slice``) to serve, e.g. all but a held-out tail.
    """

    def __init__(
        self,
        path: str,
        *,
        separator: str = "\t",
        columns: Mapping[str, str] | None = None,
        roles: Sequence[str] = ("image", "text"),
        rows: slice = slice(None),
    ):
        self.path = path
        header, table = read_table(path, separator)
        columns = dict(columns or {})
        self.columns: dict[str, str] = {}
        for role in roles:
            column = columns.get(role) or DEFAULT_COLUMNS.get(role, "")
            if not column:
                raise ValueError(
                    f"{path}: no column for the {role} role; set config.data.columns.{role} "
                    f"(the CSV's columns: {header})"
                )
            if column not in header:
                raise ValueError(
                    f"{path}: no column {column!r} for the {role} role (its columns: {header}; "
                    f"separator {separator!r}, set config.data.csv_separator for another)"
                )
            self.columns[role] = column
        self.base = files.parent(path)
        selected = table[rows]
        self._values = {
            role: [row[header.index(column)] for row in selected]
            for role, column in self.columns.items()
        }
        self.class_names: tuple[str, ...] = ()
        if "label" in self.columns:
            all_labels, self.class_names = label_table(
                [row[header.index(self.columns["label"])] for row in table]
            )
            self._labels = all_labels[rows]
        self._length = len(selected)
        self.may_lack_inputs = False
        self.multiple_captions = False

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int) -> dict[str, Any]:
        example: dict[str, Any] = {}
        name = f"{self.path}:{index}"
        for role, values in self._values.items():
            value = values[index]
            if role == "text":
                example["caption"] = value
            elif role == "label":
                example["label"] = self._labels[index]
            else:
                url = files.join(self.base, value)
                name = url
                try:
                    example[FILE_ROLES[role]] = files.read_bytes(url)
                except (OSError, ValueError):
                    return bad_examples.bad("missing file", url)
                if role == "audio":
                    example[records.AUDIO_FORMAT_KEY] = value.rpartition(".")[2].lower()
        example[records.NAME_KEY] = name
        return example

    def __repr__(self) -> str:
        return f"CsvSource({self.path!r}, {len(self)} examples, columns={self.columns})"
