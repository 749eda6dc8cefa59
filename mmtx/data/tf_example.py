"""Reads serialized ``tf.train.Example`` protos without TensorFlow.

ArrayRecord (and TFRecord) files written by TensorFlow pipelines, MaxText's and many grain
users' among them, hold one ``tf.train.Example`` per record: a map from feature name to a list
of bytes, floats or int64s. :func:`parse_example` decodes the protocol-buffer wire format of
that one message type directly (``Example.features`` = 1; ``Features.feature`` = 1, a map
entry of key = 1 and value = 2; ``Feature.bytes_list`` / ``float_list`` / ``int64_list`` = 1
/ 2 / 3, each a repeated ``value`` = 1, packed or not).
"""

from __future__ import annotations

import struct

import numpy as np

_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5


def _varint(data: bytes, position: int) -> tuple[int, int]:
    """The varint at ``position`` -> (value, position after it)."""
    value = shift = 0
    while True:
        if position >= len(data):
            raise ValueError("truncated varint")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _fields(data: bytes) -> list[tuple[int, int, bytes | int]]:
    """The top-level fields of one message: ``(number, wire type, value)``, value = the bytes
    of a length-delimited field or fixed-width field, the integer of a varint."""
    out: list[tuple[int, int, bytes | int]] = []
    position = 0
    while position < len(data):
        key, position = _varint(data, position)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, position = _varint(data, position)
            out.append((number, wire, value))
        elif wire == _LENGTH:
            length, position = _varint(data, position)
            if position + length > len(data):
                raise ValueError("truncated length-delimited field")
            out.append((number, wire, data[position : position + length]))
            position += length
        elif wire in (_FIXED32, _FIXED64):
            width = 4 if wire == _FIXED32 else 8
            if position + width > len(data):
                raise ValueError("truncated fixed-width field")
            out.append((number, wire, data[position : position + width]))
            position += width
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return out


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _feature_values(feature: bytes) -> list[bytes] | np.ndarray:
    """One ``Feature`` -> its list of bytes, float32 array or int64 array."""
    for kind, _, payload in _fields(feature):
        if not isinstance(payload, bytes):
            raise ValueError("a Feature's kind must be a message")
        values = _fields(payload)
        if kind == 1:  # BytesList
            return [v for _, wire, v in values if wire == _LENGTH and isinstance(v, bytes)]
        if kind == 2:  # FloatList, packed (one length-delimited run) or one fixed32 each
            floats: list[float] = []
            for _, wire, v in values:
                if wire == _LENGTH and isinstance(v, bytes):
                    if len(v) % 4:
                        raise ValueError("a packed float list whose length is not 4 n")
                    floats.extend(struct.unpack(f"<{len(v) // 4}f", v))
                elif wire == _FIXED32 and isinstance(v, bytes):
                    floats.append(struct.unpack("<f", v)[0])
            return np.asarray(floats, np.float32)
        if kind == 3:  # Int64List, packed varints or one varint each
            ints: list[int] = []
            for _, wire, v in values:
                if wire == _LENGTH and isinstance(v, bytes):
                    position = 0
                    while position < len(v):
                        value, position = _varint(v, position)
                        ints.append(_signed64(value))
                elif wire == _VARINT and isinstance(v, int):
                    ints.append(_signed64(v))
            return np.asarray(ints, np.int64)
    return []


def parse_example(record: bytes) -> dict[str, list[bytes] | np.ndarray]:
    """A serialized ``tf.train.Example`` -> ``{feature name: values}``: a list of ``bytes``
    for a ``bytes_list``, float32 ``[n]`` for a ``float_list``, int64 ``[n]`` for an
    ``int64_list``. Raises ``ValueError`` when ``record`` is not one (or is cut short)."""
    features: dict[str, list[bytes] | np.ndarray] = {}
    for number, wire, payload in _fields(record):
        if number != 1 or wire != _LENGTH or not isinstance(payload, bytes):
            raise ValueError("not a tf.train.Example (its only field is features = 1)")
        for entry_number, entry_wire, entry in _fields(payload):
            if entry_number != 1 or entry_wire != _LENGTH or not isinstance(entry, bytes):
                raise ValueError("not a tf.train.Example (Features holds map entries = 1)")
            key, value = None, b""
            for field, _, part in _fields(entry):
                if field == 1 and isinstance(part, bytes):
                    key = part.decode("utf-8")
                elif field == 2 and isinstance(part, bytes):
                    value = part
            if key is None:
                raise ValueError("a tf.train.Example feature without a name")
            features[key] = _feature_values(value)
    return features


# The feature names looked for per role when the config names none (the first present wins).
DEFAULT_FEATURES: dict[str, tuple[str, ...]] = {
    "image": ("image", "image/encoded", "jpg", "jpeg", "png", "webp"),
    "text": ("caption", "text", "txt", "captions"),
    "audio": ("audio", "audio/encoded", "wav", "flac", "mp3", "ogg"),
    "label": ("label", "image/class/label", "cls"),
}
