"""The kinds of source ``config.data.source`` names (``csv:PATH``, ``wds:PATTERN``, ...) and
how a spec is told apart; :mod:`mmtx.data.sources` opens them.

Standard library only: the config layer (:mod:`mmtx.config`) checks a spec's kind without
importing grain, fsspec or jax.
"""

from __future__ import annotations

RANDOM_ACCESS_KINDS = ("csv", "folder", "arrayrecord")
STREAM_KINDS = ("wds", "parquet")
FILE_KINDS = RANDOM_ACCESS_KINDS + STREAM_KINDS


def source_kind(spec: str) -> str:
    """``"wds:/data/{0..9}.tar"`` -> ``"wds"``; ``"synthetic"`` -> ``"synthetic"``,
    ``"tfds:coco"`` -> ``"tfds"``; anything else -> ``""``."""
    if spec == "synthetic":
        return "synthetic"
    kind, sep, location = spec.partition(":")
    if sep and location and kind in (*FILE_KINDS, "tfds"):
        return kind
    return ""
