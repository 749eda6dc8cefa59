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


def _dividing_prefix(axes: tuple[str, ...], size: int, mesh: Any) -> tuple[str, ...]:
    """The longest prefix of mesh ``axes`` whose devices divide ``size``."""
    kept: tuple[str, ...] = ()
    for axis in axes:
        if size % math.prod(mesh.shape[name] for name in (*kept, axis)):
            break
        kept = (*kept, axis)
    return kept


# TPUs store an array's minor-most dimension in 128 lanes, and their compiler lays out, as
# that dimension, one that pads least (a sublane tile also shrinks to fit: (4, 128), (2, 128)).
TPU_LANES = 128


def lane_padding(held: tuple[int, ...], lanes: int | None) -> float:
    """How many times its elements a shard of dimensions ``held`` takes in memory when its
    minor-most dimension is padded to a multiple of ``lanes`` and laid out as the dimension
    that pads least: ``f32[4, 16, 64]`` in 128 lanes is 2.0, ``f32[1024, 1, 64]`` 1.0.
    ``lanes`` None (CPU, GPU: untiled) is 1.0."""
    if lanes is None or not held or 0 in held:
        return 1.0
    return min(-(-size // lanes) * lanes / size for size in held)


def param_partition_spec(
    names: tuple[str | None, ...],
    shape: tuple[int, ...],
    mesh: Any,
    *,
    lanes: int | None = None,
) -> PartitionSpec:
    """The mesh placement of one param: ``names`` (its logical axes, one per dimension) mapped
    through :data:`LOGICAL_AXIS_RULES`, then rules that keep every device's share near
    the ideal (the param / the devices):

    - a dimension keeps the longest prefix of its mesh axes whose devices divide it (a
      259-token vocabulary stays whole over ``tensor=2``) rather than failing;
    - a param that the rules leave unsplit over ``fsdp`` (a bias of ``mlp`` or ``heads``, a
      kernel annotated with no ``embed`` axis) is split over ``fsdp`` along its largest
      dimension that divides, other than the ``layers`` axis that ``nn.scan`` slices one
      layer at a time; as fully sharded data parallelism does, no param is replicated over
      ``fsdp`` where one of its dimensions divides;
    - with ``lanes`` (a TPU's 128: see :func:`lane_padding`), ``fsdp`` goes to the dimension
      whose split leaves the shard padded least, the rules' choice where it is as good: an
      attention kernel ``[layers, embed, heads, 64]`` of embed 1024 over 16 devices is split
      on its head dimension (``[24, 1024, 16, 4]``, no padding) rather than on ``embed``
      (``[24, 64, 16, 64]``, every lane half empty); among equals, the largest dimension.
      Which dimension fsdp splits changes no value: a param is gathered whole before use.
    """
    mapped = nn.logical_to_mesh_axes(names, LOGICAL_AXIS_RULES) or PartitionSpec()
    entries: list[tuple[str, ...]] = []
    for size, axes in zip(shape, (*mapped, *[None] * len(shape)), strict=False):
        named = axes if isinstance(axes, tuple) else (axes,) if axes else ()
        entries.append(_dividing_prefix(named, size, mesh))
    if mesh.shape["fsdp"] > 1:
        names = (*names, *[None] * (len(shape) - len(names)))
        dim = _fsdp_dimension(names, shape, entries, mesh, lanes)
        if dim is not None and "fsdp" not in entries[dim]:  # not where the rules put it
            entries = [tuple(a for a in axes if a != "fsdp") for axes in entries]
            entries[dim] = (*entries[dim], "fsdp")
    return PartitionSpec(
        *(axes[0] if len(axes) == 1 else axes if axes else None for axes in entries)
    )


def _fsdp_dimension(
    names: tuple[str | None, ...],
    shape: tuple[int, ...],
    entries: list[tuple[str, ...]],
    mesh: Any,
    lanes: int | None,
) -> int | None:
    """The dimension to split over ``fsdp`` (see :func:`param_partition_spec`), None where no
    dimension but ``layers`` divides; ``entries`` are the dimensions' mesh axes so far."""
    fsdp = mesh.shape["fsdp"]
    ruled = next((dim for dim, axes in enumerate(entries) if "fsdp" in axes), None)
    if ruled is not None and lanes is None:
        return ruled
    # Each dimension's size on one device, as placed by every axis but fsdp.
    held = [
        size // math.prod(mesh.shape[a] for a in axes if a != "fsdp")
        for size, axes in zip(shape, entries, strict=True)
    ]
    candidates = [
        dim for dim, size in enumerate(held) if names[dim] != "layers" and size % fsdp == 0
    ]
    if not candidates:
        return None

    def split(dim: int) -> tuple[int, ...]:
        return tuple(size // fsdp if d == dim else size for d, size in enumerate(held))

    # Least padding, then the rules' choice, then the largest dimension (the last of equals).
    return min(
        candidates,
        key=lambda dim: (lane_padding(split(dim), lanes), dim != ruled, -held[dim], -dim),
    )


def logical_shardings(mesh: Any, boxed_tree: Any, platform: str | None = None) -> Any:
    """NamedShardings for a tree of (abstract) ``nn.Partitioned`` leaves (plain leaves: no
    logical axes), each placed by :func:`param_partition_spec` for ``platform`` (default:
    the platform of ``mesh``'s devices; an ``AbstractMesh`` has none: untiled), in
    :data:`TPU_LANES` on ``tpu``."""
    if platform is None and isinstance(mesh, Mesh):
        platform = mesh_platform(mesh)
    lanes = TPU_LANES if platform == "tpu" else None
    specs = nn.get_partition_spec(boxed_tree)
    shapes = jax.tree.map(
        lambda x: x.shape, nn.meta.unbox(boxed_tree), is_leaf=lambda x: hasattr(x, "shape")
    )

    def place(spec: PartitionSpec, shape: tuple[int, ...]) -> NamedSharding:
        names = tuple(spec) + (None,) * (len(shape) - len(spec))
        return NamedSharding(mesh, param_partition_spec(names, shape, mesh, lanes=lanes))

    return jax.tree.map(place, specs, shapes, is_leaf=lambda x: isinstance(x, PartitionSpec))


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
