"""Fingerprints of arrays, to tell a checkpoint's bytes from what was saved.

A fingerprint is two 32-bit sums over an array's elements: each element's bits are mixed
with its flat position (murmur3's finaliser) and the results added modulo 2**32. Integer
addition is associative and commutative, so the sum is the same whatever the sharding, the
device count or the reduction order: a state saved on a pod and restored on a laptop has the
same fingerprints. A changed element (a flipped bit, a zeroed page, two swapped values)
changes both sums unless two independent 32-bit sums collide at once. It is a check against
damage, not against an adversary.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Two lanes with independent seeds make a 64-bit fingerprint.
_SEEDS = (0x9E3779B9, 0x85EBCA6B)


def _mix(x: jax.Array) -> jax.Array:
    """murmur3's 32-bit finaliser: a bijection on uint32 that spreads every input bit."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def _bits(x: jax.Array) -> jax.Array:
    """An array's raw bits as uint32, one per element (a trailing axis for 8-byte types)."""
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[x.dtype.itemsize]
    return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)


def _flat_positions(shape: tuple[int, ...]) -> jax.Array:
    """uint32 array of ``shape`` holding each element's row-major position (mod 2**32),
    built per axis so that a sharded array needs no reshape."""
    position = jnp.zeros(shape, jnp.uint32)
    stride = 1
    for axis in reversed(range(len(shape))):
        iota = jax.lax.broadcasted_iota(jnp.uint32, shape, axis)
        position = position + iota * jnp.uint32(stride % 2**32)
        stride *= shape[axis]
    return position


def _leaf_fingerprint(x: jax.Array) -> jax.Array:
    bits = _bits(x)
    position = _flat_positions(bits.shape)
    lanes = [
        jnp.sum(_mix(bits ^ _mix(position + jnp.uint32(seed))), dtype=jnp.uint32) for seed in _SEEDS
    ]
    return jnp.stack(lanes)


@jax.jit
def _fingerprints(leaves: list[jax.Array]) -> list[jax.Array]:
    return [_leaf_fingerprint(x) for x in leaves]


def leaf_paths(tree: Any) -> list[str]:
    """``"params/text/embed/embedding"``-style names of a pytree's leaves, in leaf order.

    Dict keys, sequence indices and dataclass / namedtuple fields all become path parts,
    so a tree and its orbax-restored copy (where namedtuples come back as dicts or lists)
    have the same names.
    """

    def part(key: Any) -> str:
        for attribute in ("key", "name", "idx"):
            if hasattr(key, attribute):
                return str(getattr(key, attribute))
        return str(key)

    return [
        "/".join(part(k) for k in path) for path, _ in jax.tree_util.tree_leaves_with_path(tree)
    ]


def fingerprint(tree: Any) -> dict[str, str]:
    """Leaf path -> 16 hex digits, for every array leaf of ``tree`` (sharded or not).

    Runs one jitted reduction over the arrays (a read of each, no copies to the host beyond
    two uint32 per leaf). Equal on every topology for equal values; see the module docstring.
    """
    leaves = jax.tree.leaves(tree)
    sums = jax.device_get(_fingerprints([jnp.asarray(x) for x in leaves]))
    return {
        path: f"{int(np.asarray(s)[0]):08x}{int(np.asarray(s)[1]):08x}"
        for path, s in zip(leaf_paths(tree), sums, strict=True)
    }


def differences(saved: dict[str, str], restored: dict[str, str]) -> list[str]:
    """Paths whose fingerprints differ between two :func:`fingerprint` results (or that only
    one of them has), sorted."""
    return sorted(p for p in saved.keys() | restored.keys() if saved.get(p) != restored.get(p))
