"""Paths and URLs of data files: brace expansion, listing, opening, through fsspec.

Every data source reads through these, so a path may be local (``/data/cc3m``,
``file:///data/cc3m``) or any URL an installed fsspec filesystem opens: ``gs://`` (gcsfs),
``s3://`` (s3fs), ``memory://`` (fsspec's in-process filesystem, used by the tests), ...
Files are opened as streams; nothing is copied to local disk first.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import IO

import fsspec

_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")
_GLOB_CHARS = ("*", "?", "[")


def expand_braces(pattern: str) -> list[str]:
    """``"a/{00..02}.tar"`` -> ``["a/00.tar", "a/01.tar", "a/02.tar"]``, as the shell and
    WebDataset expand it: ``{a,b}`` lists alternatives, ``{M..N}`` a range of integers whose
    width is the wider of ``M`` and ``N`` (zero-padded). Several braces give the product, in
    order. A pattern without braces is returned as the one item."""
    match = _BRACE.search(pattern)
    if match is None:
        return [pattern]
    head, body, tail = pattern[: match.start()], match.group(1), pattern[match.end() :]
    numeric = _RANGE.match(body)
    if numeric:
        start, stop = int(numeric.group(1)), int(numeric.group(2))
        width = max(len(numeric.group(1)), len(numeric.group(2)))
        step = 1 if stop >= start else -1
        choices = [f"{i:0{width}d}" for i in range(start, stop + step, step)]
    else:
        choices = body.split(",")
    return [expanded for choice in choices for expanded in expand_braces(head + choice + tail)]


def _protocol_prefix(url: str) -> str:
    """``"gs://b/x"`` -> ``"gs://"``; a local path -> ``""``."""
    scheme, sep, _ = url.partition("://")
    return f"{scheme}://" if sep and "/" not in scheme else ""


def list_files(pattern: str, extensions: tuple[str, ...] = ()) -> list[str]:
    """The files a source pattern names, in order.

    ``pattern``: one path or URL, a brace pattern (:func:`expand_braces`), a glob
    (``gs://b/shards/*.tar``) or a directory, whose files ending in one of ``extensions`` are
    taken (sorted by name). Names keep the pattern's protocol (``gs://...``). Raises
    ``FileNotFoundError`` naming the pattern when nothing matches or a named file is absent.
    """
    names: list[str] = []
    for item in expand_braces(pattern):
        fs, path = fsspec.core.url_to_fs(item)
        prefix = _protocol_prefix(item)
        if any(c in path for c in _GLOB_CHARS):
            found = sorted(fs.glob(path))
            names.extend(prefix + _strip(fs, p) for p in found)
        elif fs.isdir(path):
            found = sorted(
                p for p in fs.find(path) if not extensions or p.lower().endswith(extensions)
            )
            names.extend(prefix + _strip(fs, p) for p in found)
        elif fs.exists(path):
            names.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such file (from the pattern {pattern!r})")
    if not names:
        wanted = f" ending in {', '.join(extensions)}" if extensions else ""
        raise FileNotFoundError(f"no files{wanted} match {pattern!r}")
    return names


def _strip(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """A path as ``fs.glob``/``fs.find`` returns it, without a leading protocol."""
    return fs._strip_protocol(path) if "://" in path else path


def open_binary(url: str) -> IO[bytes]:
    """Opens ``url`` (a local path or an fsspec URL) for reading bytes, as a stream."""
    return fsspec.open(url, "rb").open()


def read_bytes(url: str) -> bytes:
    """The whole file at ``url``."""
    with open_binary(url) as f:
        return f.read()


def read_text(url: str) -> str:
    """The whole file at ``url``, as UTF-8 text (a BOM dropped)."""
    return read_bytes(url).decode("utf-8-sig")


def join(base: str, name: str) -> str:
    """``name`` resolved against the directory ``base``: ``name`` itself when it is absolute
    or a URL, else ``base/name`` (with ``base``'s protocol)."""
    if _protocol_prefix(name) or os.path.isabs(name):
        return name
    return base.rstrip("/") + "/" + name


def parent(url: str) -> str:
    """The directory holding ``url`` (protocol kept)."""
    head, _, _ = url.rstrip("/").rpartition("/")
    return head or "."


def walk_files(directory: str) -> Iterator[str]:
    """Every file under ``directory`` (recursively), sorted, with the directory's protocol."""
    fs, path = fsspec.core.url_to_fs(directory)
    prefix = _protocol_prefix(directory)
    if not fs.isdir(path):
        raise FileNotFoundError(f"{directory}: no such directory")
    for name in sorted(fs.find(path)):
        yield prefix + _strip(fs, name)
