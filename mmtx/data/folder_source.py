"""``folder:DIR``: one subdirectory per class, as torchvision's ImageFolder and clip_benchmark
lay a classification set out::

    pets/
      cat/0001.jpg  cat/0002.png ...
      dog/0001.jpg ...
      golden_retriever/0001.jpg ...

Classes are the subdirectories in sorted order (label 0 = the first); their names, with
underscores as spaces, are the zero-shot class names, so ``config.data.eval_source =
"folder:pets"`` evaluates zero-shot classification with no other file. Image files
(``.jpg .jpeg .png .webp``) and audio files (``.wav .flac .mp3 .ogg``) both count, at any
depth under a class directory. Each example's caption is its class name, so a text tower
can also train on a folder.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mmtx.data import bad_examples, files, records

FOLDER_PREFIX = "folder:"


class FolderSource:
    """A class-per-subdirectory folder as a random-access grain source; ``source[i]`` holds
    ``image`` or ``audio`` (the file's bytes), ``caption`` (the class name) and ``label``
    (int32). Files are listed once, in order (class, then path); reading one that has gone
    gives a ``missing file`` :func:`mmtx.data.bad_examples.bad` marker. ``entries`` lists
    them as ``(url, label)``. Picklable.

    Args:
      directory: the folder, local or an fsspec URL.
      rows: which files (a ``slice`` of the listing) to serve.
    """

    def __init__(self, directory: str, *, rows: slice = slice(None)):
        self.directory = directory.rstrip("/")
        extensions = tuple(f".{e}" for e in records.IMAGE_EXTENSIONS + records.AUDIO_EXTENSIONS)
        items: list[tuple[str, int]] = []
        names: list[str] = []
        by_class: dict[str, list[str]] = {}
        for url in files.walk_files(self.directory):
            relative = url[len(self.directory) :].lstrip("/")
            class_dir, sep, _ = relative.partition("/")
            if sep and url.lower().endswith(extensions):
                by_class.setdefault(class_dir, []).append(url)
        for label, class_dir in enumerate(sorted(by_class)):
            names.append(class_dir.replace("_", " "))
            items.extend((url, label) for url in by_class[class_dir])
        if not items:
            raise FileNotFoundError(
                f"{directory}: no class subdirectories holding image or audio files "
                f"({', '.join(extensions)})"
            )
        self.class_names = tuple(names)
        self.entries = items[rows]
        self.may_lack_inputs = False
        self.multiple_captions = False

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict[str, Any]:
        url, label = self.entries[index]
        try:
            data = files.read_bytes(url)
        except (OSError, ValueError):
            return bad_examples.bad("missing file", url)
        extension = url.rpartition(".")[2].lower()
        example: dict[str, Any] = {
            "caption": self.class_names[label],
            "label": np.int32(label),
            records.NAME_KEY: url,
        }
        if extension in records.AUDIO_EXTENSIONS:
            example["audio"] = data
            example[records.AUDIO_FORMAT_KEY] = extension
        else:
            example["image"] = data
        return example

    def __repr__(self) -> str:
        return (
            f"FolderSource({self.directory!r}, {len(self)} files, {len(self.class_names)} classes)"
        )
