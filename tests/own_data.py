"""Writes small image-caption datasets in users' formats, from the synthetic scenes: a CSV with
JPEG files, a class-per-folder directory, and damaged files (for the skip tests).

Importable by the test modules as ``own_data`` (pyproject's pythonpath)."""

from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
from PIL import Image

from mmtx.data.synthetic import CLASS_NAMES, SyntheticSource


def jpeg_bytes(pixels: np.ndarray, quality: int = 90) -> bytes:
    """float ``[H, W, 3]`` in [0, 1] -> JPEG bytes."""
    image = Image.fromarray(np.round(np.asarray(pixels) * 255).astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def bomb_png(width: int = 20_000, height: int = 20_000) -> bytes:
    """A PNG whose header claims ``width x height`` pixels (past PIL's decompression-bomb
    limit), with one tiny IDAT: PIL refuses it when it reads the header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00"))
        + chunk(b"IEND", b"")
    )


def write_csv_dataset(
    directory: str,
    count: int,
    *,
    seed: int = 0,
    image_size: int = 64,
    separator: str = "\t",
    name: str = "train.csv",
    with_label: bool = False,
) -> str:
    """``count`` synthetic scenes as ``directory/images/NNNNN.jpg`` and a CSV listing them
    (``filepath``, ``title`` and, ``with_label``, ``label`` as class names); returns the
    CSV's path."""
    source = SyntheticSource(split="train", seed=seed, size=count, image_size=image_size)
    os.makedirs(os.path.join(directory, "images"), exist_ok=True)
    lines = [separator.join(["filepath", "title"] + (["label"] if with_label else []))]
    for i in range(count):
        example = source[i]
        relative = f"images/{seed}_{i:05d}.jpg"
        with open(os.path.join(directory, relative), "wb") as f:
            f.write(jpeg_bytes(example["image"]))
        row = [relative, example["caption"]]
        if with_label:
            row.append(CLASS_NAMES[int(example["label"])].replace(" ", "_"))
        lines.append(separator.join(row))
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def write_folder_dataset(directory: str, per_class: int, classes: int = 4, *, seed: int = 0) -> str:
    """A class-per-folder directory of synthetic scenes of the first ``classes`` shape x colour
    classes (their names as directory names, spaces as underscores); returns the directory."""
    source = SyntheticSource(split="eval", seed=seed, size=4096, image_size=32)
    written = dict.fromkeys(range(classes), 0)
    index = 0
    while any(n < per_class for n in written.values()):
        example = source[index]
        index += 1
        label = int(example["label"])
        if label not in written or written[label] >= per_class:
            continue
        class_dir = os.path.join(directory, CLASS_NAMES[label].replace(" ", "_"))
        os.makedirs(class_dir, exist_ok=True)
        with open(os.path.join(class_dir, f"{index:05d}.jpg"), "wb") as f:
            f.write(jpeg_bytes(example["image"]))
        written[label] += 1
    return directory
