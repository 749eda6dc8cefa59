"""Reading a published checkpoint's tensors with numpy, and keeping track of which were used.

torch is never imported: ``.safetensors`` files are read with the ``safetensors`` package's
numpy loader and ``.npz`` files (big_vision) with numpy. A torch pickle (``.bin``, ``.pt``,
``.pth``) is refused with the one-line command that turns it into safetensors.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

TORCH_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
SHOWN_NAMES = 5  # How many missing / unexpected names an error lists.


class CheckpointImportError(ValueError):
    """A checkpoint that does not fit the family it was imported as: missing or unexpected
    tensors, a shape that disagrees, or a file mmtx cannot read."""


def convert_command(path: str) -> str:
    """The shell command that turns a torch pickle into a ``.safetensors`` file (run once,
    where torch is installed)."""
    target = os.path.splitext(path)[0] + ".safetensors"
    return (
        'python -c "import sys, torch, safetensors.torch as st; '
        "sd = torch.load(sys.argv[1], map_location='cpu', weights_only=True); "
        "sd = sd.get('state_dict', sd); "
        'st.save_file({k: v.contiguous() for k, v in sd.items()}, sys.argv[2])" '
        f"{path} {target}"
    )


def read_tensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of a ``.safetensors`` or ``.npz`` file, by name, as numpy arrays.

    bfloat16 tensors (which numpy cannot hold) are widened to float32; other dtypes are
    kept. ``.npz`` names are used as stored (big_vision's ``params/img/...``).

    Raises:
      FileNotFoundError: no such file.
      CheckpointImportError: a torch pickle or another format (the message says how to
        convert a pickle once).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint file {path}")
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".safetensors":
        return _read_safetensors(path)
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            return {name: np.asarray(data[name]) for name in data.files}
    if suffix in TORCH_PICKLE_SUFFIXES:
        raise CheckpointImportError(
            f"{path} is a torch pickle, which mmtx reads only as safetensors (torch is not a "
            f"dependency). Convert it once where torch is installed:\n  {convert_command(path)}"
        )
    raise CheckpointImportError(
        f"{path}: unknown checkpoint format {suffix!r}; use a .safetensors or .npz file"
    )


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    """Reads a safetensors file: its JSON header, then each tensor's little-endian bytes.

    Read by hand rather than with ``safetensors.numpy.load_file`` because numpy has no
    bfloat16, in which many checkpoints are published; those are widened to float32 (exact).
    """
    import ml_dtypes

    dtypes = {
        "F64": np.float64,
        "F32": np.float32,
        "F16": np.float16,
        "BF16": ml_dtypes.bfloat16,
        "I64": np.int64,
        "I32": np.int32,
        "I16": np.int16,
        "I8": np.int8,
        "U8": np.uint8,
        "BOOL": np.bool_,
    }
    with open(path, "rb") as f:
        (header_size,) = struct.unpack("<Q", f.read(8))
        try:
            header = json.loads(f.read(header_size))
        except ValueError as error:
            raise CheckpointImportError(f"{path} is not a safetensors file ({error})") from error
        data = f.read()
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if entry["dtype"] not in dtypes:
            raise CheckpointImportError(
                f"{path}: tensor {name} has unsupported dtype {entry['dtype']}"
            )
        start, end = entry["data_offsets"]
        dtype = np.dtype(dtypes[entry["dtype"]]).newbyteorder("<")
        array = np.frombuffer(
            data, dtype=dtype, count=(end - start) // dtype.itemsize, offset=start
        )
        array = array.reshape(entry["shape"])
        tensors[name] = array.astype(np.float32) if entry["dtype"] == "BF16" else array.copy()
    return tensors


class Missing:
    """Stands for a tensor the checkpoint lacks, so that a conversion can go on and report
    every missing name at once. The layout helpers pass it through."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"Missing({self.name!r})"


Tensor = np.ndarray | Missing


class TensorSource:
    """A checkpoint's tensors, handing them out by name and recording which were taken.

    ``source[name]`` returns the tensor (as float32 unless ``keep_dtype``) or a
    :class:`Missing` placeholder, remembering the name; :meth:`check` then raises one
    :class:`CheckpointImportError` naming the first few missing and unexpected tensors.
    """

    def __init__(self, tensors: Mapping[str, np.ndarray], *, family: str, path: str = ""):
        self.tensors = dict(tensors)
        self.family = family
        self.path = path
        self.used: set[str] = set()
        self.missing: list[str] = []
        self.ignored: set[str] = set()

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def __getitem__(self, name: str) -> Tensor:
        if name not in self.tensors:
            if name not in self.missing:
                self.missing.append(name)
            return Missing(name)
        self.used.add(name)
        return np.asarray(self.tensors[name], dtype=np.float32)

    def shape(self, name: str) -> tuple[int, ...]:
        """The shape of ``name``; a missing tensor that a config is read from ends the
        import at once (nothing can be derived without it)."""
        if name not in self.tensors:
            self.missing.append(name)
            self.check()
        return tuple(self.tensors[name].shape)

    def ignore(self, names: Iterable[str]) -> None:
        """Marks tensors that exist in the family's files but have no counterpart in mmtx
        (buffers such as ``position_ids``); they are neither used nor unexpected."""
        self.ignored.update(n for n in names if n in self.tensors)

    def unexpected(self) -> list[str]:
        """Tensors neither used nor ignored, in file order."""
        return [n for n in self.tensors if n not in self.used and n not in self.ignored]

    def check(self) -> None:
        """Raises :class:`CheckpointImportError` when a tensor was missing or left unused."""
        unexpected = self.unexpected()
        if not self.missing and not unexpected:
            return
        parts = []
        if self.missing:
            parts.append(f"missing {len(self.missing)}: {_some(self.missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}: {_some(unexpected)}")
        where = f" {self.path}" if self.path else ""
        raise CheckpointImportError(
            f"checkpoint{where} does not match the {self.family!r} family ({'; '.join(parts)}). "
            f"Is it a {self.family} checkpoint, and the whole model (not one tower)?"
        )


def _some(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN_NAMES])
    return shown + (f", ... ({len(names) - SHOWN_NAMES} more)" if len(names) > SHOWN_NAMES else "")


def first_names(tensors: Mapping[str, Any], count: int = SHOWN_NAMES) -> str:
    """The first ``count`` tensor names of a checkpoint, for messages."""
    return _some(list(tensors))
