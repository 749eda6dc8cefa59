"""Reading a published checkpoint's tensors with numpy, and keeping track of which were used.

torch is never imported: ``.safetensors`` files are read with the ``safetensors`` package's
numpy loader and ``.npz`` files (big_vision) with numpy. A torch pickle (``.bin``, ``.pt``,
``.pth``) is refused with the one-line command that turns it into safetensors.
"""

from __future__ import annotations

import json
import math
import os
import struct
import zipfile
import zlib
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

TORCH_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
SHOWN_NAMES = 5  # How many missing / unexpected names an error lists.


class CheckpointImportError(ValueError):
    """A checkpoint that does not fit the family it was imported as: missing or unexpected
    tensors, a shape that disagrees, a weight that is not a finite float, or a file mmtx
    cannot read (cut short, malformed, pickled). The message is one line naming the file."""


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
        convert a pickle once); a file cut short or malformed (a header that lies about its
        size or a tensor's bytes, a pickled ``.npz`` array): one line naming the file and,
        where there is one, the tensor. Nothing is allocated for a size the file does not
        hold.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint file {path}")
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".safetensors":
        return _read_safetensors(path)
    if suffix == ".npz":
        return _read_npz(path)
    if suffix in TORCH_PICKLE_SUFFIXES:
        raise CheckpointImportError(
            f"{path} is a torch pickle, which mmtx reads only as safetensors (torch is not a "
            f"dependency); it is never unpickled. Convert it once where torch is installed:  "
            f"{convert_command(path)}"
        )
    raise CheckpointImportError(
        f"{path}: unknown checkpoint format {suffix!r}; use a .safetensors or .npz file"
    )


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    """Reads a safetensors file: its JSON header, then each tensor's little-endian bytes.

    Read by hand rather than with ``safetensors.numpy.load_file`` because numpy has no
    bfloat16, in which many checkpoints are published; those are widened to float32 (exact).
    Every size the header gives (its own, each tensor's byte range) is checked against the
    file before anything is read or allocated.
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
        size = os.fstat(f.fileno()).st_size
        if size < 8:
            raise CheckpointImportError(
                f"{path} is not a safetensors file ({size} bytes, fewer than the 8 that give "
                "its header's size)"
            )
        (header_size,) = struct.unpack("<Q", f.read(8))
        if header_size > size - 8:
            raise CheckpointImportError(
                f"{path} is not a safetensors file or is cut short (its header is said to be "
                f"{header_size} bytes; the file has {size - 8} after the size)"
            )
        try:
            header = json.loads(f.read(header_size))
        except (ValueError, RecursionError) as error:
            raise CheckpointImportError(f"{path} is not a safetensors file ({error})") from error
        if not isinstance(header, dict):
            raise CheckpointImportError(
                f"{path} is not a safetensors file (its header is a JSON "
                f"{type(header).__name__}, not an object)"
            )
        data_start = 8 + header_size
        data_size = size - data_start
        entries = {
            name: _safetensors_entry(path, name, entry, dtypes, data_size)
            for name, entry in header.items()
            if name != "__metadata__"
        }
        tensors = {}
        for name, (dtype, shape, start, end) in entries.items():
            try:
                array = np.empty(shape, dtype)
            except ValueError as error:  # a dimension beyond numpy's, in an empty tensor
                raise CheckpointImportError(
                    f"{path}: tensor {name} has shape {shape}, which numpy cannot hold"
                ) from error
            f.seek(data_start + start)
            if f.readinto(array.reshape(-1).view(np.uint8)) != end - start:
                raise CheckpointImportError(f"{path}: tensor {name} was cut short while read")
            tensors[name] = array.astype(np.float32) if dtype == ml_dtypes.bfloat16 else array
    return tensors


def _safetensors_entry(
    path: str, name: str, entry: Any, dtypes: Mapping[str, Any], data_size: int
) -> tuple[np.dtype, tuple[int, ...], int, int]:
    """One header entry as (little-endian dtype, shape, start, end), its byte range checked
    against the shape and the data's size; :class:`CheckpointImportError` otherwise."""
    if not isinstance(entry, dict):
        raise CheckpointImportError(
            f"{path}: tensor {name} has a header entry {_short(entry)}, not an object"
        )
    for key in ("dtype", "shape", "data_offsets"):
        if key not in entry:
            raise CheckpointImportError(f"{path}: tensor {name} has no {key} in the header")
    kind, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(kind, str) or kind not in dtypes:
        raise CheckpointImportError(f"{path}: tensor {name} has unsupported dtype {_short(kind)}")
    if not isinstance(shape, list) or not all(_is_count(n) for n in shape):
        raise CheckpointImportError(f"{path}: tensor {name} has a malformed shape {_short(shape)}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_count, offsets))):
        raise CheckpointImportError(
            f"{path}: tensor {name} has malformed data_offsets {_short(offsets)}"
        )
    start, end = offsets
    if end < start:
        raise CheckpointImportError(
            f"{path}: tensor {name} has data_offsets [{start}, {end}], which end before they start"
        )
    if end > data_size:
        raise CheckpointImportError(
            f"{path}: tensor {name} ends at byte {end} of the data, which has {data_size} "
            "(the file is cut short)"
        )
    dtype = np.dtype(dtypes[kind]).newbyteorder("<")
    needed = math.prod(shape) * dtype.itemsize
    if end - start != needed:
        raise CheckpointImportError(
            f"{path}: tensor {name} has {end - start} bytes, but shape {tuple(shape)} of {kind} "
            f"needs {needed}"
        )
    return dtype, tuple(shape), start, end


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _short(value: Any, limit: int = 40) -> str:
    """``repr(value)``, cut to ``limit`` characters, for a message of one line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# What reading an archive member can raise besides a clean "not an array": a corrupt or
# cut-short zip, a compression method or encryption zipfile cannot read, a size beyond memory.
_NPZ_READ_ERRORS = (
    ValueError,
    EOFError,
    OSError,
    RuntimeError,
    NotImplementedError,
    MemoryError,
    zipfile.BadZipFile,
    zlib.error,
)


def _read_npz(path: str) -> dict[str, np.ndarray]:
    """Reads an ``.npz`` archive (numpy's ``savez``) without pickles: each member's ``.npy``
    header is read first, and a member whose bytes do not match its shape is refused before
    its array is allocated. Names are numpy's: the member's, less ``.npy``."""
    with open(path, "rb") as f:
        magic = f.read(len(np.lib.format.MAGIC_PREFIX))
    if magic == np.lib.format.MAGIC_PREFIX:
        raise CheckpointImportError(
            f"{path} is a single .npy array, not an .npz archive of named arrays"
        )
    if not zipfile.is_zipfile(path):
        raise CheckpointImportError(f"{path} is not an .npz file (not a zip archive, or cut short)")
    tensors = {}
    try:
        archive = zipfile.ZipFile(path)
    except _NPZ_READ_ERRORS as error:
        raise CheckpointImportError(f"{path} is not an .npz file ({error})") from error
    with archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            name = info.filename.removesuffix(".npy")
            try:
                tensors[name] = _read_npz_member(path, name, archive, info)
            except CheckpointImportError:
                raise
            except _NPZ_READ_ERRORS as error:
                raise CheckpointImportError(
                    f"{path}: tensor {name} could not be read ({type(error).__name__}: "
                    f"{_one_line(error)})"
                ) from error
    return tensors


def _read_npz_member(
    path: str, name: str, archive: zipfile.ZipFile, info: zipfile.ZipInfo
) -> np.ndarray:
    """One ``.npy`` member: its header, then (sizes checked) its array."""
    fmt = np.lib.format
    with archive.open(info) as member:
        try:
            version = fmt.read_magic(member)
        except ValueError as error:
            raise CheckpointImportError(
                f"{path}: {info.filename} is not a .npy array ({_one_line(error)})"
            ) from error
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, _, dtype = read_header(member)
        header_size = member.tell()
    if dtype.hasobject:
        raise CheckpointImportError(
            f"{path}: tensor {name} is a pickled (object) array, which mmtx does not load"
        )
    needed = math.prod(shape) * dtype.itemsize
    stored = info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size
    if stored or info.header_offset + info.compress_size > os.path.getsize(path):
        raise CheckpointImportError(
            f"{path}: tensor {name} is said to take {info.compress_size} bytes in the archive "
            f"({info.file_size} unpacked), which it does not hold (cut short?)"
        )
    if info.file_size - header_size != needed:
        raise CheckpointImportError(
            f"{path}: tensor {name} has {info.file_size - header_size} bytes, but shape "
            f"{shape} of {dtype} needs {needed}"
        )
    with archive.open(info) as member:
        return np.asarray(fmt.read_array(member, allow_pickle=False))


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


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

    ``source[name]`` returns the tensor as float32 or a :class:`Missing` placeholder,
    remembering the name; :meth:`check` then raises one :class:`CheckpointImportError`
    naming the first few missing and unexpected tensors. A tensor handed out is a weight: one
    that is not floating point, or holds NaN or inf, is a :class:`CheckpointImportError`
    naming it (:meth:`shape` reads shapes only, of any tensor).
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
        return self._weight(name)

    def _weight(self, name: str) -> np.ndarray:
        """``name`` as float32, checked: a weight is floating point and finite."""
        tensor = np.asarray(self.tensors[name])
        where = self.path or f"the {self.family} checkpoint"
        if not _is_floating(tensor.dtype):
            raise CheckpointImportError(
                f"{where}: tensor {name} has dtype {tensor.dtype}, but a weight is floating point"
            )
        with np.errstate(over="ignore"):  # a float64 beyond float32's range: said below
            weight = tensor.astype(np.float32, copy=False)
        # min and max are NaN when any value is, +-inf when any is; and neither allocates
        # (np.zeros' untouched pages stay so: a config derived from shapes costs no memory).
        if weight.size and not (np.isfinite(weight.min()) and np.isfinite(weight.max())):
            finite = np.isfinite(tensor)
            if finite.all():  # finite in the file, but not in float32
                bad = weight.size - int(np.count_nonzero(np.isfinite(weight)))
                what = f"{_values(bad)} too large for float32"
            else:
                bad = weight.size - int(np.count_nonzero(finite))
                what = f"{_values(bad, 'non-finite ')} (NaN or inf)"
            raise CheckpointImportError(
                f"{where}: tensor {name} has {what}; a model with them computes NaN"
            )
        return weight

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


def _values(count: int, kind: str = "") -> str:
    return f"{count} {kind}value" + ("" if count == 1 else "s")


def _is_floating(dtype: np.dtype) -> bool:
    """numpy's real floats and ml_dtypes' (bfloat16 and the float8s, which numpy calls ``V``)."""
    if dtype.kind == "f":
        return True
    if dtype.kind != "V" or dtype.names is not None:
        return False
    import ml_dtypes

    try:
        ml_dtypes.finfo(dtype)
    except (TypeError, ValueError):
        return False
    return True


def _some(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN_NAMES])
    return shown + (f", ... ({len(names) - SHOWN_NAMES} more)" if len(names) > SHOWN_NAMES else "")


def first_names(tensors: Mapping[str, Any], count: int = SHOWN_NAMES) -> str:
    """The first ``count`` tensor names of a checkpoint, for messages."""
    return _some(list(tensors))
