"""The device mesh and the logical-axis rules that map param names onto it."""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# Logical axis name -> mesh axis. Params and activations name their axes (mmtx.nn); changing
# the parallelism is an edit of config.mesh (and, rarely, of this table).
LOGICAL_AXIS_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("vocab", "tensor"),
    ("kv", None),
    ("length", None),
    ("layers", None),
)


def mesh_shape(mesh_config: ml_collections.ConfigDict, num_devices: int) -> tuple[int, ...]:
    """Resolves ``config.mesh`` (one axis may be -1) to a shape whose product is the devices."""
    sizes = [mesh_config[axis] for axis in MESH_AXES]
    requested = dict(zip(MESH_AXES, sizes, strict=True))
    if sizes.count(-1) > 1:
        raise ValueError(f"config.mesh: at most one axis may be -1; got {requested}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise ValueError(f"config.mesh: {num_devices} devices do not divide by {known}")
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ValueError(
            f"config.mesh {requested} resolves to {sizes}, which needs {math.prod(sizes)} "
            f"devices; there are {num_devices}"
        )
    return tuple(sizes)


def create_mesh(mesh_config: ml_collections.ConfigDict) -> Mesh:
    """A ``("data", "fsdp", "tensor")`` mesh over all devices of all processes."""
    devices = jax.devices()
    shape = mesh_shape(mesh_config, len(devices))
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the data-parallel axes; the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(("data", "fsdp")))


def logical_shardings(mesh: Mesh, boxed_tree: Any) -> Any:
    """NamedShardings for a tree of (abstract) ``nn.Partitioned`` leaves via the rules table."""
    specs = nn.get_partition_spec(boxed_tree)
    return nn.logical_to_mesh_sharding(specs, mesh, LOGICAL_AXIS_RULES)
