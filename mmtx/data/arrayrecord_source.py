"""``arrayrecord:PATTERN``: ArrayRecord files, grain's random-access record format.

Each record is one example as :func:`mmtx.data.records.encode_record` writes it (a MessagePack
map from field name to bytes, the names as in a WebDataset shard: ``jpg``, ``txt``, ``cls``,
``wav``, ...). ``python -m mmtx.data.pack --to=arrayrecord:DIR`` writes such files. The files
are read with ``grain.sources.ArrayRecordDataSource`` (local paths, and ``gs://`` where the
array_record library reads it), random access, so grain shuffles them globally.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grain

from mmtx.data import bad_examples, records

ARRAYRECORD_EXTENSIONS = (".array_record", ".arrayrecord")


class ArrayRecordSource:
    """ArrayRecord files of :func:`mmtx.data.records.encode_record` records, as a random-access
    source; ``source[i]`` is :func:`mmtx.data.records.example_from_fields` of record ``i``
    (a ``bad record`` marker for one that does not decode). Picklable.

    Args:
      paths: the files, in order (record ``i`` counts across them).
      rows: which records (a ``slice``) to serve.
    """

    def __init__(self, paths: Sequence[str], *, rows: slice = slice(None)):
        self.paths = list(paths)
        self._source = grain.sources.ArrayRecordDataSource(self.paths)
        self._indices = range(len(self._source))[rows]
        self.may_lack_inputs = False
        self.multiple_captions = False
        self.class_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        position = self._indices[index]
        name = f"{self.paths[0] if len(self.paths) == 1 else 'arrayrecord'}#{position}"
        try:
            fields = records.decode_record(self._source[position])
        except ValueError:
            return bad_examples.bad("bad record", name)
        return records.example_from_fields(fields, name)

    def __repr__(self) -> str:
        return f"ArrayRecordSource({len(self.paths)} files, {len(self)} records)"
