"""``arrayrecord:PATTERN``: ArrayRecord files, grain's random-access record format.

Each record is one example, in either of two encodings, told apart per record:

* mmtx's own, as :func:`mmtx.data.records.encode_record` writes it: a MessagePack map from
  field name to bytes, the names as in a WebDataset shard (``jpg``, ``txt``, ``cls``,
  ``wav``, ...). ``python -m mmtx.data.pack --to=arrayrecord:DIR`` writes such files.
* a serialized ``tf.train.Example``, as TensorFlow pipelines (MaxText's among them) write
  them, read without TensorFlow (:mod:`mmtx.data.tf_example`). The feature behind each role
  is ``config.data.columns.<role>``, else the first of
  :data:`mmtx.data.tf_example.DEFAULT_FEATURES` present (``image`` or ``image/encoded``,
  ``caption`` or ``text``, ``label``, ...).

The files are read with ``grain.sources.ArrayRecordDataSource`` (local paths, and ``gs://``
where the array_record library reads it), random access, so grain shuffles them globally.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import grain
import numpy as np

from mmtx.data import bad_examples, records, tf_example

ARRAYRECORD_EXTENSIONS = (".array_record", ".arrayrecord")


class ArrayRecordSource:
    """ArrayRecord files of :func:`mmtx.data.records.encode_record` records, as a random-access
    source; ``source[i]`` is :func:`mmtx.data.records.example_from_fields` of record ``i``
    (a ``bad record`` marker for one that does not decode). Picklable.

    Args:
      paths: the files, in order (record ``i`` counts across them).
      rows: which records (a ``slice``) to serve.
    """

    def __init__(
        self,
        paths: Sequence[str],
        *,
        rows: slice = slice(None),
        columns: Mapping[str, str] | None = None,
    ):
        self.paths = list(paths)
        self.columns = {role: name for role, name in (columns or {}).items() if name}
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
        record = self._source[position]
        try:
            return records.example_from_fields(records.decode_record(record), name)
        except ValueError:
            pass
        try:
            features = tf_example.parse_example(record)
        except ValueError:
            return bad_examples.bad("bad record", name)
        return self._from_tf_example(features, name)

    def _from_tf_example(
        self, features: Mapping[str, list[bytes] | np.ndarray], name: str
    ) -> dict[str, Any]:
        """A parsed ``tf.train.Example`` -> a source example (see the module)."""
        example: dict[str, Any] = {records.NAME_KEY: name}
        for role, candidates in tf_example.DEFAULT_FEATURES.items():
            wanted = self.columns.get(role)
            present = [f for f in ((wanted,) if wanted else candidates) if f in features]
            if not present:
                continue
            values = features[present[0]]
            if len(values) == 0:
                continue
            if role == "text":
                example["caption"] = [v.decode("utf-8", errors="replace") for v in values]
                if len(example["caption"]) == 1:
                    example["caption"] = example["caption"][0]
            elif role == "label":
                example["label"] = np.int32(values[0])
            else:
                example[role] = bytes(values[0])
                if role == "audio":
                    example[records.AUDIO_FORMAT_KEY] = records.sniff_audio_format(values[0])
        return example

    def __repr__(self) -> str:
        return f"ArrayRecordSource({len(self.paths)} files, {len(self)} records)"
