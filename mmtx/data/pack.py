"""``python -m mmtx.data.pack``: write WebDataset tar shards or ArrayRecord files from a CSV or a
class-per-folder directory.

    python -m mmtx.data.pack --from=csv:train.csv --to=wds:shards/ --shard_size=10000
    python -m mmtx.data.pack --from=folder:pets/ --to=arrayrecord:records/

The files are copied as they are (a JPEG stays the same bytes). A tar shard holds, per
example, members named ``<key>.<ext>``, grouped by key, in order: the image or audio file under
its own extension (``000000000.jpg``), the caption as ``.txt``, the label as ``.cls`` (a
folder's class index; a CSV's label column, names numbered in sorted order), as
``webdataset.TarWriter`` writes them, so any WebDataset reader reads them. An ArrayRecord
record holds the same fields (:func:`mmtx.data.records.encode_record`). Shards are
``00000.tar``, ``00001.tar``, ... (``.array_record``). Rows whose file is missing are
skipped and counted. Existing shards are never overwritten: the command refuses to write into
an output that already holds any.
"""

from __future__ import annotations

import argparse
import io
import sys
import tarfile
from collections.abc import Iterator, Sequence
from typing import Any

import fsspec

from mmtx.data import bad_examples, files
from mmtx.data.csv_source import DEFAULT_COLUMNS, label_table, read_table
from mmtx.data.folder_source import FolderSource
from mmtx.data.records import encode_record

FIELD_ORDER = ("jpg", "jpeg", "png", "webp", "wav", "flac", "mp3", "ogg", "mp4", "txt", "cls")


def _extension(path: str) -> str:
    return path.rpartition(".")[2].lower() if "." in path.rpartition("/")[2] else "bin"


def csv_samples(
    path: str, *, separator: str = "\t", columns: dict[str, str] | None = None
) -> Iterator[dict[str, bytes] | dict[str, Any]]:
    """The samples of a CSV (:mod:`mmtx.data.csv_source`'s format) as fields (extension ->
    bytes), or a :func:`mmtx.data.bad_examples.bad` marker for a row whose file is missing.
    ``columns``: role (``image``, ``audio``, ``text``, ``label``) -> column; ``image`` and
    ``text`` default to ``filepath`` and ``title``."""
    header, rows = read_table(path, separator)
    columns = {**DEFAULT_COLUMNS, **{k: v for k, v in (columns or {}).items() if v}}
    wanted = {role: column for role, column in columns.items() if column in header}
    if not any(role in wanted for role in ("image", "audio")):
        raise ValueError(f"{path}: no image or audio column among {header} (columns: {columns})")
    labels = None
    if "label" in wanted:
        labels, _ = label_table([row[header.index(wanted["label"])] for row in rows])
    base = files.parent(path)
    for number, row in enumerate(rows):
        fields: dict[str, bytes] = {}
        for role in ("image", "audio"):
            if role in wanted:
                url = files.join(base, row[header.index(wanted[role])])
                try:
                    fields[_extension(url)] = files.read_bytes(url)
                except (OSError, ValueError):
                    yield bad_examples.bad("missing file", url)
                    break
        else:
            if "text" in wanted:
                fields["txt"] = row[header.index(wanted["text"])].encode()
            if labels is not None:
                fields["cls"] = str(int(labels[number])).encode()
            yield fields


def folder_samples(directory: str) -> Iterator[dict[str, bytes] | dict[str, Any]]:
    """The samples of a class-per-folder directory (:mod:`mmtx.data.folder_source`) as fields:
    the file under its extension, ``txt`` the class name, ``cls`` the class index."""
    source = FolderSource(directory)
    for url, label in source.entries:
        try:
            data = files.read_bytes(url)
        except (OSError, ValueError):
            yield bad_examples.bad("missing file", url)
            continue
        yield {
            _extension(url): data,
            "txt": source.class_names[label].encode(),
            "cls": str(label).encode(),
        }


def _ordered(fields: dict[str, bytes]) -> list[tuple[str, bytes]]:
    rank = {ext: i for i, ext in enumerate(FIELD_ORDER)}
    return sorted(fields.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0]))


def _write_tar(url: str, samples: Sequence[tuple[str, dict[str, bytes]]]) -> None:
    with (
        fsspec.open(url, "wb") as f,
        tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar,
    ):
        for key, fields in samples:
            for extension, data in _ordered(fields):
                info = tarfile.TarInfo(f"{key}.{extension}")
                info.size, info.mode, info.mtime = len(data), 0o444, 0
                tar.addfile(info, io.BytesIO(data))


def _write_arrayrecord(url: str, samples: Sequence[tuple[str, dict[str, bytes]]]) -> None:
    from array_record.python.array_record_module import ArrayRecordWriter

    fs, path = fsspec.core.url_to_fs(url)
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    if "file" not in protocols:
        raise ValueError(f"{url}: ArrayRecord files are written to local paths only")
    writer = ArrayRecordWriter(path, "group_size:1")
    try:
        for _, fields in samples:
            writer.write(encode_record(dict(_ordered(fields))))
    finally:
        writer.close()


def pack(source: str, target: str, *, shard_size: int = 10_000, **csv_options: Any) -> dict:
    """Writes ``source`` (``csv:PATH`` or ``folder:DIR``) as shards at ``target``
    (``wds:DIR`` or ``arrayrecord:DIR``, local or an fsspec URL for tar shards). Returns
    ``{"examples", "shards", "skipped"}``; raises ``FileExistsError`` when ``target``
    already holds shards."""
    kind, _, location = source.partition(":")
    if kind == "csv":
        samples = csv_samples(location, **csv_options)
    elif kind == "folder":
        samples = folder_samples(location)
    else:
        raise ValueError(f"--from must be csv:PATH or folder:DIR; got {source!r}")
    out_kind, _, out_dir = target.partition(":")
    suffix = {"wds": ".tar", "arrayrecord": ".array_record"}.get(out_kind)
    if suffix is None or not out_dir:
        raise ValueError(f"--to must be wds:DIR or arrayrecord:DIR; got {target!r}")
    if shard_size <= 0:
        raise ValueError(f"--shard_size must be > 0; got {shard_size}")
    fs, path = fsspec.core.url_to_fs(out_dir)
    if fs.exists(path) and any(str(p).endswith(suffix) for p in fs.ls(path, detail=False)):
        raise FileExistsError(f"{out_dir} already holds {suffix} shards; pack into a new directory")
    fs.makedirs(path, exist_ok=True)
    write = _write_tar if out_kind == "wds" else _write_arrayrecord
    skipped: dict[str, int] = {}
    shard: list[tuple[str, dict[str, bytes]]] = []
    examples = shards = 0

    def flush() -> None:
        nonlocal shards
        write(out_dir.rstrip("/") + f"/{shards:05d}{suffix}", shard)
        shards += 1
        shard.clear()

    for sample in samples:
        if bad_examples.is_bad(sample):
            reason = bad_examples.REASONS[sample[bad_examples.BAD_KEY]]
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        shard.append((f"{examples:09d}", sample))
        examples += 1
        if len(shard) == shard_size:
            flush()
    if shard:
        flush()
    return {"examples": examples, "shards": shards, "skipped": skipped}


def main(argv: Sequence[str] | None = None) -> int:
    """The command line (see the module)."""
    parser = argparse.ArgumentParser(
        prog="python -m mmtx.data.pack", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--from", dest="source", required=True, help="csv:PATH or folder:DIR")
    parser.add_argument("--to", dest="target", required=True, help="wds:DIR or arrayrecord:DIR")
    parser.add_argument("--shard_size", type=int, default=10_000, help="examples per shard")
    parser.add_argument("--csv_separator", default="\t", help="csv: field separator (tab)")
    for role, default in (("image", "filepath"), ("text", "title"), ("audio", ""), ("label", "")):
        parser.add_argument(f"--{role}_column", default=default, help=f"csv: the {role} column")
    args = parser.parse_args(argv)
    options: dict[str, Any] = {}
    if args.source.startswith("csv:"):
        options = {
            "separator": args.csv_separator.encode().decode("unicode_escape"),
            "columns": {
                r: getattr(args, f"{r}_column") for r in ("image", "text", "audio", "label")
            },
        }
    try:
        result = pack(args.source, args.target, shard_size=args.shard_size, **options)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    line = f"wrote {result['examples']} examples in {result['shards']} shards to {args.target}"
    skipped = bad_examples.describe(result["skipped"])
    print(f"{line}; {skipped}" if skipped else line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
