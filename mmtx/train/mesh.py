"""The device mesh and the logical-axis rules that map param names onto it."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mmtx.nn.platform import compiling_for, mesh_platform

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


def create_mesh(mesh_config: ml_collections.ConfigDict, devices: Any = None) -> Mesh:
    """A ``("data", "fsdp", "tensor")`` mesh over ``devices`` (default: all devices of all
    processes)."""
    devices = jax.devices() if devices is None else list(devices)
    shape = mesh_shape(mesh_config, len(devices))
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the data-parallel axes; the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(("data", "fsdp")))


def logical_shardings(mesh: Mesh, boxed_tree: Any) -> Any:
    """NamedShardings for a tree of (abstract) ``nn.Partitioned`` leaves via the rules table.

    A dimension whose size does not divide by its mesh axes (a 259-token vocabulary over
    ``tensor=2``) stays replicated along them rather than failing.
    """
    specs = nn.get_partition_spec(boxed_tree)
    shardings = nn.logical_to_mesh_sharding(specs, mesh, LOGICAL_AXIS_RULES)
    shapes = jax.tree.map(
        lambda x: x.shape, nn.meta.unbox(boxed_tree), is_leaf=lambda x: hasattr(x, "shape")
    )

    def divisible(sharding: NamedSharding, shape: tuple[int, ...]) -> NamedSharding:
        entries = []
        for size, axes in zip(shape, (*sharding.spec, *[None] * len(shape)), strict=False):
            names = axes if isinstance(axes, tuple) else (axes,) if axes else ()
            ways = math.prod(mesh.shape[name] for name in names)
            entries.append(axes if size % ways == 0 else None)
        return NamedSharding(mesh, PartitionSpec(*entries))

    return jax.tree.map(
        divisible, shardings, shapes, is_leaf=lambda x: isinstance(x, NamedSharding)
    )


def with_sharding_rules(fn: Callable[..., Any], mesh: Mesh) -> Callable[..., Any]:
    """``fn`` traced with ``mesh`` and :data:`LOGICAL_AXIS_RULES` in context, so that the
    activations' ``nn.with_logical_constraint`` annotations become sharding constraints
    (outside such a context they are no-ops), and for the platform of ``mesh``'s devices
    (:func:`mmtx.nn.platform.compiling_for`), so that the code paths chosen by platform
    follow the devices the program is compiled for, not the host's backend."""
    platform = mesh_platform(mesh)

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with (
            jax.sharding.use_abstract_mesh(mesh.abstract_mesh),
            nn.logical_axis_rules(LOGICAL_AXIS_RULES),
            compiling_for(platform),
        ):
            return fn(*args, **kwargs)

    return wrapped


def check_divisibility(config: ml_collections.ConfigDict, mesh: Mesh, process_count: int) -> None:
    """Raises ``ValueError`` naming the config fields when the batch or the model does not
    divide over the mesh (checked before anything is compiled)."""
    data_shards = mesh.shape["data"] * mesh.shape["fsdp"]
    microbatches = config.train.microbatches
    checks = [
        ("train.batch_size", config.train.batch_size, data_shards * microbatches,
         f"the {data_shards} data-parallel devices (mesh data x fsdp) x "
         f"train.microbatches={microbatches}"),
        ("train.batch_size", config.train.batch_size, process_count,
         f"the {process_count} processes"),
        ("eval.batch_size", config.eval.batch_size, data_shards,
         f"the {data_shards} data-parallel devices (mesh data x fsdp)"),
        ("eval.batch_size", config.eval.batch_size, process_count,
         f"the {process_count} processes"),
    ]  # fmt: skip
    tensor = mesh.shape["tensor"]
    towers = [(f"model.{m}", config.model[m]) for m in config.model.modalities]
    for name, tower in [*towers, ("fusion", config.fusion)]:
        for field in ("num_heads", "mlp_dim"):
            checks.append(
                (f"{name}.{field}", tower[field], tensor, f"mesh.tensor={tensor} devices")
            )
    for field, value, divisor, what in checks:
        if value % divisor:
            raise ValueError(f"config.{field}={value} must be divisible by {what}")
