"""Tests for mmtx/train/integrity.py: array fingerprints."""

import json
import os
import subprocess
import sys
from collections import namedtuple

import jax.numpy as jnp
import ml_dtypes
import numpy as np

from mmtx.train import integrity

SEEDS = (0x9E3779B9, 0x85EBCA6B)


def reference_fingerprint(x: np.ndarray) -> str:
    """The fingerprint written out in numpy, element by element in Python integers."""
    x = np.asarray(x)
    if x.dtype == np.bool_:
        bits = x.astype(np.uint64)
    else:
        unsigned = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint32}[x.dtype.itemsize]
        bits = x.view(unsigned).astype(np.uint64)
        if x.dtype.itemsize == 8:
            bits = bits.reshape(*x.shape, 2)
    mask = 0xFFFFFFFF

    def mix(v: int) -> int:
        v ^= v >> 16
        v = (v * 0x85EBCA6B) & mask
        v ^= v >> 13
        v = (v * 0xC2B2AE35) & mask
        return v ^ (v >> 16)

    lanes = []
    for seed in SEEDS:
        total = 0
        for position, value in enumerate(bits.reshape(-1).tolist()):
            total += mix(int(value) ^ mix((position + seed) & mask))
        lanes.append(total & mask)
    return f"{lanes[0]:08x}{lanes[1]:08x}"


def test_matches_the_reference_for_every_dtype():
    rng = np.random.default_rng(0)
    arrays = {
        "f32": rng.normal(size=(3, 5)).astype(np.float32),
        "bf16": rng.normal(size=(7,)).astype(ml_dtypes.bfloat16),
        "i8": rng.integers(-128, 127, size=(2, 2, 3)).astype(np.int8),
        "u32": rng.integers(0, 2**32, size=(4,), dtype=np.uint32),
        "bool": rng.random((6,)) > 0.5,
        "scalar": np.float32(3.5),
    }
    got = integrity.fingerprint(arrays)
    assert got == {name: reference_fingerprint(x) for name, x in arrays.items()}


def test_any_changed_element_changes_the_fingerprint():
    x = np.random.default_rng(1).normal(size=(64, 33)).astype(np.float32)
    base = integrity.fingerprint({"x": x})["x"]
    flipped = x.copy()
    flipped.view(np.uint32)[17, 5] ^= 1 << 3  # one bit of one mantissa
    swapped = x.copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    transposed_shape = x.reshape(33, 64)  # same bytes, read in the same order: equal
    assert integrity.fingerprint({"x": flipped})["x"] != base
    assert integrity.fingerprint({"x": swapped})["x"] != base
    assert integrity.fingerprint({"x": transposed_shape})["x"] == base


def test_paths_ignore_the_container_type():
    State = namedtuple("State", ["mu", "count"])
    as_namedtuple = {"opt": (State(mu={"w": np.ones(2)}, count=np.int32(1)),)}
    as_dicts = {"opt": [{"mu": {"w": np.ones(2)}, "count": np.int32(1)}]}
    assert integrity.fingerprint(as_namedtuple) == integrity.fingerprint(as_dicts)
    assert integrity.leaf_paths(as_dicts) == ["opt/0/count", "opt/0/mu/w"]
    assert integrity.differences({"a": "1", "b": "2"}, {"a": "1", "b": "3", "c": "4"}) == [
        "b",
        "c",
    ]


SHARDED = """
import json, jax, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from mmtx.train import integrity
x = np.arange(8 * 12, dtype=np.float32).reshape(8, 12) / 7
mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("a", "b"))
sharded = jax.device_put(x, NamedSharding(mesh, P("a", "b")))
assert len(sharded.addressable_shards) == 8
other = jax.device_put(x.T, NamedSharding(mesh, P(None, "a")))
print(json.dumps(integrity.fingerprint({"x": sharded, "y": other})))
"""


def test_equal_on_eight_devices_and_one():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    out = subprocess.run(
        [sys.executable, "-c", SHARDED], env=env, capture_output=True, text=True, check=True
    ).stdout
    x = np.arange(8 * 12, dtype=np.float32).reshape(8, 12) / 7
    on_one = integrity.fingerprint({"x": jnp.asarray(x), "y": jnp.asarray(x.T)})
    assert json.loads(out.strip().splitlines()[-1]) == on_one
