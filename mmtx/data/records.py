"""One example's fields as files hold them (``jpg`` bytes, ``txt`` bytes, ...) -> a source example.

WebDataset shards, mmtx's ArrayRecord files and the packer share one naming: a field is named
by its extension, as ``webdataset.TarWriter`` and img2dataset name tar members
(``000000001.jpg``, ``000000001.txt``, ``000000001.json``). :data:`EXTENSION_ROLES` maps each
extension to the example key a source yields (the keys of :mod:`mmtx.data.pipeline`):

=================================  =======================================================
``jpg`` ``jpeg`` ``png`` ``webp``  ``image``: the encoded bytes (decoded in preprocessing)
``txt``                            ``caption``: UTF-8 text
``wav`` ``flac`` ``mp3`` ``ogg``   ``audio``: the encoded bytes (:func:`decode_audio`)
``cls``                            ``label``: an integer as text
``json``                           ``json``: metadata, kept as bytes, not used for training
``mp4``                            ``video``: encoded bytes (not decoded by mmtx yet)
=================================  =======================================================
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import msgpack
import numpy as np
import scipy.io.wavfile

from mmtx.data import bad_examples

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
AUDIO_EXTENSIONS = ("wav", "flac", "mp3", "ogg")
EXTENSION_ROLES: dict[str, str] = {
    **dict.fromkeys(IMAGE_EXTENSIONS, "image"),
    **dict.fromkeys(AUDIO_EXTENSIONS, "audio"),
    "txt": "caption",
    "cls": "label",
    "json": "json",
    "mp4": "video",
}
# Where a sample holds several fields of one role (a .jpg and a .png), the first extension
# in this order wins.
_PREFERENCE = tuple(EXTENSION_ROLES)
# The example key naming where an example came from (a file, a shard member): for errors.
NAME_KEY = bad_examples.NAME_KEY
# The encoded format of an example's audio (its extension), for decode_audio.
AUDIO_FORMAT_KEY = "_audio_format"


def extension_of(member: str) -> tuple[str, str]:
    """A tar member's name -> ``(key, extension)`` as WebDataset splits it: the extension is
    everything after the first dot of the file name, lower-cased (``"a/b.seg.jpg"`` ->
    ``("a/b", "seg.jpg")``; a multi-part extension maps by its last part)."""
    directory, _, base = member.rpartition("/")
    stem, dot, extension = base.partition(".")
    key = f"{directory}/{stem}" if directory else stem
    return key, extension.lower() if dot else ""


def example_from_fields(fields: Mapping[str, bytes], name: str) -> dict[str, Any]:
    """A sample's fields (extension -> bytes) -> a source example: ``image`` bytes,
    ``caption`` str, ``audio`` bytes with its format, ``label`` int, ``video`` bytes, and
    :data:`NAME_KEY`. Fields of no known role are ignored. A ``cls`` that is not an integer
    makes the sample a bad example (:func:`mmtx.data.bad_examples.bad`)."""
    example: dict[str, Any] = {NAME_KEY: name}
    for extension in _PREFERENCE:
        data = _field(fields, extension)
        role = EXTENSION_ROLES[extension]
        if data is None or role in example or role == "json":
            continue
        if role == "caption":
            example["caption"] = data.decode("utf-8", errors="replace")
        elif role == "label":
            try:
                example["label"] = np.int32(int(data.decode("utf-8").strip()))
            except (UnicodeDecodeError, ValueError):
                return bad_examples.bad("bad label", f"{name}.{extension}")
        else:
            example[role] = data
            if role == "audio":
                example[AUDIO_FORMAT_KEY] = extension
    return example


def _field(fields: Mapping[str, bytes], extension: str) -> bytes | None:
    """The field with ``extension`` (or a multi-part extension ending in it)."""
    if extension in fields:
        return fields[extension]
    for name, data in fields.items():
        if name.endswith("." + extension):
            return data
    return None


def decode_audio(data: bytes, audio_format: str = "wav") -> tuple[np.ndarray, int]:
    """Encoded audio -> (waveform ``[S]`` or ``[S, C]`` as stored: PCM ints or floats, its
    sample rate in Hz).

    WAV is read with scipy (8/16/24/32-bit PCM, float); FLAC, MP3 and OGG need the
    ``soundfile`` package (``pip install 'mmtx[audio]'``). Raises ``ValueError`` (or
    ``RuntimeError`` from soundfile) when the bytes do not decode.
    """
    audio_format = audio_format.lower()
    if audio_format == "wav":
        rate, samples = scipy.io.wavfile.read(io.BytesIO(data))
        return np.asarray(samples), int(rate)
    try:
        import soundfile
    except ImportError as error:
        raise ImportError(
            f"decoding .{audio_format} audio needs the soundfile package: "
            "pip install 'mmtx[audio]' (WAV needs nothing extra)"
        ) from error
    samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=False)
    return np.asarray(samples), int(rate)


def encode_record(fields: Mapping[str, bytes]) -> bytes:
    """A sample's fields (extension -> bytes, as in a WebDataset shard) -> one ArrayRecord
    record: a MessagePack map of the same names and bytes."""
    return msgpack.packb({str(k): bytes(v) for k, v in fields.items()}, use_bin_type=True)


def decode_record(record: bytes) -> dict[str, bytes]:
    """The inverse of :func:`encode_record`; ``ValueError`` when ``record`` is not one."""
    try:
        fields = msgpack.unpackb(record, raw=False)
    except (msgpack.UnpackException, ValueError) as error:
        raise ValueError(f"not an mmtx record (a MessagePack map of fields): {error}") from error
    if not isinstance(fields, dict) or not all(
        isinstance(k, str) and isinstance(v, bytes) for k, v in fields.items()
    ):
        raise ValueError("not an mmtx record (a MessagePack map of name -> bytes)")
    return fields


def sniff_audio_format(data: bytes) -> str:
    """The format of encoded audio from its first bytes: ``flac``, ``ogg``, ``mp3`` or
    ``wav`` (the default)."""
    if data.startswith(b"fLaC"):
        return "flac"
    if data.startswith(b"OggS"):
        return "ogg"
    if data.startswith(b"ID3") or data[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "mp3"
    return "wav"
