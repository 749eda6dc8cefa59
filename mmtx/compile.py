"""Plan a run on hardware you don't have: ``python -m mmtx.compile --config=configs/base.py:tiny
--topology=v5e:2x2``.

The command compiles the run's real train step and eval step (those of
:func:`mmtx.train.build.build`, which the training loop runs) ahead of time for the devices
of a TPU topology (``v4:2x2x1``, ``v5e:2x2``, ``v5p:2x2x1``, ``v6e:2x2``, ``v5e:16x16`` ...,
as libtpu spells them: generation, then the chips along each axis), on this host, without
the hardware: ``jax.experimental.topologies.get_topology_desc`` gives compile-only devices
(it needs ``libtpu``: ``pip install 'mmtx[aot]'``). The config's mesh is resolved against
the topology's device count, and every code path chosen by platform follows the topology's
devices (:mod:`mmtx.nn.platform`), so the program is the one a TPU VM would run.

It prints, per device: the state's bytes (params, optimizer, EMA) against the ideal fully
sharded size (the whole state / devices); the argument, output, aliased and temporary bytes
of ``compiled.memory_analysis()`` and their total against the chip's HBM (:data:`CHIPS`);
the FLOPs of one step (``compiled.cost_analysis()``) and the time they take at the chip's
bf16 peak (:data:`mmtx.train.flops.PEAK_FLOPS`); the collectives of the compiled HLO by
kind with their bytes (:func:`collectives`); and the Pallas (``tpu_custom_call``) and cuDNN
kernels in it. Every number comes from the compiler; nothing is run.

GPU topologies (``h100:8``: 8 GPUs on one host; ``h100:2x8``: two hosts of 8) compile for
the GPU described by a target config in ``mmtx/gpu_specs/`` (:data:`GPU_SPECS`, each file
stating its sources) through JAX's CUDA plugin (``pip install 'mmtx[aot-gpu]'``; no CUDA
libraries needed), without autotuning (:data:`GPU_COMPILER_OPTIONS`). XLA:GPU reports no
FLOPs without a GPU: the analytic count (:func:`mmtx.train.flops.analytic_flops`) is shown
instead. Without cuDNN on this host, ``attention.implementation = auto`` is compiled as
``xla`` (jax asks cuDNN for its version when it traces cuDNN attention), and a note says so.

``--per_chip_batch=N`` sets the train and eval batches to N x the topology's chips.
``--find_batch`` searches the largest per-chip train batch that fits (doubling, then
bisection; one train-step compile per try): the global batch is the per-chip batch x the
devices.

Any ``--config.FIELD=VALUE`` overrides a config field, as in ``python -m mmtx.main``.

Exits 0 when every step fits; 1 with one ``error: ...`` line (XLA's message, e.g.
``... exceeds available HBM``) when a step does not fit the chip's memory; 2 for a bad flag,
config field, topology or mesh.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TextIO

import jax
import jax.numpy as jnp
import ml_collections
from absl import flags, logging
from jax._src import xla_bridge  # backends_are_initialized: no public equivalent
from ml_collections import config_flags

from mmtx import config as config_lib
from mmtx.launch import answer_help

__all__ = [
    "CHIPS",
    "COLLECTIVES",
    "Chip",
    "CompileError",
    "DoesNotFit",
    "StateShare",
    "StepReport",
    "UsageError",
    "chip_of",
    "collectives",
    "compile_run",
    "custom_calls",
    "flops_text",
    "hbm_per_device",
    "largest_excess",
    "largest_fitting",
    "main",
    "peak_per_device",
    "state_bytes",
    "state_total",
    "step_flops",
    "tiled_bytes",
    "topology_devices",
]

GIB = 2**30
MIB = 2**20


@dataclasses.dataclass(frozen=True)
class Chip:
    """One accelerator chip's facts: ``hbm_bytes`` of memory and ``cores`` TensorCores, of
    which one jax device holds ``device.num_cores`` (a v4 or v5p device is a whole chip in
    megacore mode, one core otherwise)."""

    name: str
    device_kinds: tuple[str, ...]  # lower-case substrings of jax's device_kind
    hbm_bytes: int
    cores: int
    source: str


# HBM per chip. Google's pages say "GB"/"GiB" loosely; XLA's own limit on a v5e is
# "available HBM (15.75G)", 16 GiB less what the runtime reserves, so the sizes are GiB.
# Peak FLOP/s per chip are mmtx.train.flops.PEAK_FLOPS (with their sources).
CHIPS: tuple[Chip, ...] = (
    Chip("v6e", ("tpu v6 lite", "tpu v6e"), 32 * GIB, 1,
         "cloud.google.com/tpu/docs/v6e: HBM capacity 32 GB per chip, 1 TensorCore"),
    Chip("v5e", ("tpu v5 lite", "tpu v5e"), 16 * GIB, 1,
         "cloud.google.com/tpu/docs/v5e: HBM2 capacity 16 GB per chip, 1 TensorCore"),
    Chip("v5p", ("tpu v5p", "tpu v5"), 95 * GIB, 2,
         "cloud.google.com/tpu/docs/v5p: HBM2e capacity 95 GB per chip, 2 TensorCores"),
    Chip("v4", ("tpu v4",), 32 * GIB, 2,
         "cloud.google.com/tpu/docs/v4: HBM2 capacity 32 GiB per chip, 2 TensorCores"),
    # Not "h200" alone (a GH200's device kind holds it; its HBM is not the H200's), nor "a100"
    # alone (an "NVIDIA A100-SXM4-40GB" has 40 GB).
    Chip("h200", ("nvidia h200",), 141 * 10**9, 1,
         "NVIDIA H200 Tensor Core GPU datasheet: H200 SXM 141 GB HBM3e"),
    Chip("h100", ("h100",), 80 * 10**9, 1,
         "NVIDIA H100 Tensor Core GPU datasheet: H100 SXM 80 GB HBM3"),
    Chip("a100", ("a100-sxm4-80gb", "a100 80gb"), 80 * 10**9, 1,
         "NVIDIA A100 Tensor Core GPU datasheet: A100 80GB SXM 80 GB HBM2e"),
)  # fmt: skip

# GPU topologies: name -> XLA target config (a text GpuTargetConfigProto in mmtx/gpu_specs/,
# each stating its sources), for compiling without the GPU.
GPU_SPECS = {"h100": "h100_sxm.txtpb", "h200": "h200_sxm.txtpb", "a100": "a100_sxm_80gb.txtpb"}
# Autotuning (Triton GEMM tiles, cuBLAS algorithms) runs candidates on a GPU; without one the
# compiler takes its defaults.
GPU_COMPILER_OPTIONS = {"xla_gpu_enable_triton_gemm": False, "xla_gpu_autotune_level": 0}

#: The collective kinds :func:`collectives` counts, in its order.
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")

# Bytes per element of HLO's element types (sub-byte types round up).
_ELEMENT_BYTES = {
    "pred": 1, "s4": 1, "u4": 1, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1,
    "f8e4m3b11fnuz": 1, "f8e4m3fnuz": 1, "f8e5m2fnuz": 1, "s16": 2, "u16": 2, "f16": 2,
    "bf16": 2, "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8,
    "c128": 16,
}  # fmt: skip
_ARRAY = re.compile(r"\b([a-z][a-z0-9]*)\[([0-9,]*)\]")
_INSTRUCTION = re.compile(
    r"^\s*(?:ROOT\s+)?%?(?P<name>[\w.\-]+)\s*=\s*(?P<type>.+?)\s+(?P<op>[a-z][a-z0-9\-]*)\("
    r"(?P<rest>.*)$"
)
_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%(?P<name>[\w.\-]+)\s*\(.*\{\s*$")
_OPERAND = re.compile(r"%([\w.\-]+)")
_CHANNEL = re.compile(r"\bchannel_id=(\d+)")
_TARGET = re.compile(r'custom_call_target="([^"]+)"')


class UsageError(Exception):
    """A bad flag, config field, topology or mesh (exit 2); the message is one line."""


class DoesNotFit(Exception):
    """A step does not fit the chip's memory (exit 1); the message is one line (XLA's)."""


class CompileError(Exception):
    """XLA refused to compile a step for another reason (exit 1); the message is one line."""


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def chip_of(device_kind: str) -> Chip | None:
    """The :data:`CHIPS` entry for a jax ``device_kind`` (``"TPU v5 lite"``), or None."""
    kind = device_kind.lower()
    for chip in CHIPS:
        if any(name in kind for name in chip.device_kinds):
            return chip
    return None


def _chip_share(device: Any) -> tuple[Chip | None, float]:
    """``device``'s chip and the part of it one jax device is (``num_cores`` of its cores;
    1 for a chip not in :data:`CHIPS`)."""
    chip = chip_of(device.device_kind)
    cores = getattr(device, "num_cores", 1) or 1
    return chip, (cores / chip.cores if chip is not None else 1.0)


def hbm_per_device(device: Any) -> int | None:
    """Bytes of HBM one jax ``device`` holds (its share of its chip's), or None for a chip
    not in :data:`CHIPS`."""
    chip, share = _chip_share(device)
    return int(chip.hbm_bytes * share) if chip is not None else None


def peak_per_device(device: Any) -> float | None:
    """The bf16 peak FLOP/s of one jax ``device`` (its share of its chip's
    :data:`mmtx.train.flops.PEAK_FLOPS`), or None when not listed."""
    from mmtx.train.flops import table_peak_flops

    _, share = _chip_share(device)
    chip_peak = table_peak_flops(device.device_kind)
    return chip_peak * share if chip_peak is not None else None


# --- devices ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _stderr_to(path: str) -> Iterator[None]:
    """The process's file descriptor 2 goes to ``path`` within the block (C++ logging too)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "w") as sink:
            os.dup2(sink.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def gpu_topology_devices(name: str) -> list[Any]:
    """Compile-only devices (platform ``gpu``) of ``GPU:N`` (N GPUs on one host) or
    ``GPU:HxN`` (H hosts of N), GPU a key of :data:`GPU_SPECS` (``h100:8``): the CUDA
    plugin's (``pip install 'mmtx[aot-gpu]'``) topology for the spec file's GPU."""
    from jax.experimental import topologies

    kind, _, shape = name.partition(":")
    sizes = shape.split("x")
    if len(sizes) > 2 or not all(size.isdigit() and int(size) > 0 for size in sizes):
        raise UsageError(f"--topology={name}: expected {kind}:GPUS or {kind}:HOSTSxGPUS")
    hosts, gpus = (1, int(sizes[0])) if len(sizes) == 1 else (int(sizes[0]), int(sizes[1]))
    spec = os.path.join(os.path.dirname(__file__), "gpu_specs", GPU_SPECS[kind])
    with open(spec) as f:
        target_config = f.read()
    with tempfile.TemporaryDirectory() as scratch:
        try:
            with _stderr_to(os.path.join(scratch, "cuda.log")):
                topology = topologies.get_topology_desc(
                    platform="cuda",
                    topology_name=kind,
                    target_config=target_config,
                    topology=f"1x{hosts}x{gpus}",
                )
        except (RuntimeError, NotImplementedError) as error:
            message = _one_line(str(error))
            if "not implemented" in message:
                message = "the CUDA plugin is not installed (pip install 'mmtx[aot-gpu]')"
            raise UsageError(f"--topology={name}: {message}") from error
    return list(topology.devices)


def topology_devices(name: str) -> list[Any]:
    """Compile-only devices (``jax.Device``, platform ``tpu``) of TPU topology ``name``
    (``v5e:2x2``: libtpu's spelling), or of a GPU topology (:func:`gpu_topology_devices`)
    when ``name`` starts with a key of :data:`GPU_SPECS`.

    libtpu's start-up warnings about the host (it finds no TPU here, which is expected) are
    dropped; its error becomes a :class:`UsageError` naming the topology. Several processes
    may do this at once (``ALLOW_MULTIPLE_LIBTPU_LOAD``: nothing here opens a TPU).
    """
    from jax.experimental import topologies

    if name.partition(":")[0] in GPU_SPECS:
        return gpu_topology_devices(name)
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    with tempfile.TemporaryDirectory() as scratch:
        log = os.path.join(scratch, "libtpu.log")
        try:
            with _stderr_to(log):
                topology = topologies.get_topology_desc(platform="tpu", topology_name=name)
        except RuntimeError as error:  # JaxRuntimeError, or "JAX TPU support not installed"
            message = _one_line(str(error))
            if "not installed" in message:
                message = "libtpu is not installed (pip install 'mmtx[aot]')"
            raise UsageError(f"--topology={name}: {message}") from error
    return list(topology.devices)


# --- what the compiled program holds ----------------------------------------------------------


def _array_bytes(type_text: str) -> int:
    """Bytes of the arrays in an HLO type (``f32[64,32]{1,0}`` or a tuple of them)."""
    total = 0
    for element, dims in _ARRAY.findall(type_text):
        if element in _ELEMENT_BYTES:
            sizes = [int(d) for d in dims.split(",") if d]
            total += math.prod(sizes) * _ELEMENT_BYTES[element]
    return total


def _instructions(hlo_text: str) -> Iterator[tuple[str, str, str, str, str]]:
    """``(name, type, opcode, rest of the line, computation)`` for every instruction of an
    HLO module, ``computation`` the name of the computation that holds it."""
    computation = ""
    for line in hlo_text.splitlines():
        header = _COMPUTATION.match(line)
        if header:
            computation = header["name"]
            continue
        match = _INSTRUCTION.match(line)
        if match:
            yield match["name"], match["type"], match["op"], match["rest"], computation


def collectives(hlo_text: str) -> dict[str, tuple[int, int]]:
    """``{kind: (count, bytes)}`` for every kind of :data:`COLLECTIVES` in compiled HLO text.

    Each collective counts once (XLA repeats one, under its ``channel_id``, in the async
    wrappers and fusions it schedules it in; a ``*-start``/``*-done`` pair counts once, as its
    start) and once per program, not per execution (one inside a loop counts once).
    ``bytes`` is per device: the sum over the collectives of the larger of their input and
    output (an all-gather's gathered result, a reduce-scatter's unreduced input, an
    all-reduce's buffer).

    XLA:TPU writes a reduce-scatter as an all-reduce and the slices of it, fused into one
    computation named ``all-reduce-scatter...`` (each numbering its channels from 1): such an
    all-reduce counts as a reduce-scatter, once per computation.
    """
    instructions = list(_instructions(hlo_text))
    types = {name: type_text for name, type_text, _, _, _ in instructions}
    seen: set[tuple[str, ...]] = set()
    found = {kind: [0, 0] for kind in COLLECTIVES}
    for name, type_text, op, rest, computation in instructions:
        kind = op.removesuffix("-start")
        if kind not in found:
            continue
        channel = _CHANNEL.search(rest)
        key: tuple[str, ...] = (kind, channel[1] if channel else name)
        if kind == "all-reduce" and computation.startswith("all-reduce-scatter"):
            kind, key = "reduce-scatter", ("reduce-scatter", computation, *key[1:])
        if key in seen:
            continue
        seen.add(key)
        operands = _OPERAND.findall(rest.split(")", 1)[0])
        inputs = sum(_array_bytes(types.get(operand, "")) for operand in operands)
        outputs = _array_bytes(type_text)
        if op.endswith("-start"):  # its result holds its operands, then its outputs
            outputs -= inputs
        found[kind][0] += 1
        found[kind][1] += max(inputs, outputs)
    return {kind: (count, size) for kind, (count, size) in found.items()}


def custom_calls(hlo_text: str) -> dict[str, int]:
    """``{custom-call target: count}`` in compiled HLO text, each instruction once: Pallas
    kernels are ``tpu_custom_call`` on TPU, cuDNN's start with ``__cudnn``."""
    counts: dict[str, int] = {}
    for _, _, op, rest, _ in _instructions(hlo_text):
        if op == "custom-call":
            target = _TARGET.search(rest)
            if target:
                counts[target[1]] = counts.get(target[1], 0) + 1
    return counts


def tiled_bytes(shape: Sequence[int], itemsize: int, layout: Any = None) -> int:
    """Bytes of an array of ``shape`` in a compiled ``layout`` (``jax``'s ``Layout``: the
    dimensions in ``major_to_minor`` order, the minor-most ones rounded up to the first of
    its ``tiling``'s tiles, as TPUs store them: ``f32[16, 64]`` in ``(8, 128)`` tiles is
    ``f32[16, 128]``); untiled (``layout`` None, or no tiling: CPU, GPU) it is the plain
    ``prod(shape) * itemsize``."""
    tiling = getattr(layout, "tiling", None)
    if not tiling or not shape:
        return math.prod(shape) * itemsize
    dims = [shape[axis] for axis in layout.major_to_minor]
    tile = tiling[0]
    for offset, size in enumerate(reversed(tile[-len(dims) :]), start=1):
        dims[-offset] = -(-dims[-offset] // size) * size
    return math.prod(dims) * itemsize


@dataclasses.dataclass(frozen=True)
class StateShare:
    """One part of the train state on one device: ``per_device`` bytes of its shards,
    ``tiled`` bytes of those shards in the compiled program's layouts (TPU tiles pad the
    minor dimensions; equal to ``per_device`` untiled), ``total`` bytes of the whole part."""

    per_device: int
    tiled: int
    total: int


def _held_shards(tree: Any, shardings: Any, layouts: Any = None) -> Iterator[tuple[Any, ...]]:
    """``(key path, leaf, sharding, layout)`` of every leaf of ``tree`` (``ShapeDtypeStruct``
    leaves) placed as ``shardings``, with the layout of the matching leaf of ``layouts``
    (``Format`` leaves; None: untiled)."""
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    placed = jax.tree.leaves(shardings)
    formats = jax.tree.leaves(layouts) if layouts is not None else [None] * len(leaves)
    for (path, leaf), sharding, form in zip(leaves, placed, formats, strict=True):
        yield path, leaf, sharding, getattr(form, "layout", None)


def state_bytes(abstract_state: Any, shardings: Any, layouts: Any = None) -> dict[str, StateShare]:
    """``{"params" | "optimizer" | "ema": StateShare}`` of a train state (``ShapeDtypeStruct``
    leaves) placed as ``shardings`` (``NamedSharding`` leaves): a device holds one shard of
    every leaf (``sharding.shard_shape``), in the layout of the matching leaf of ``layouts``
    (the train step's ``compiled.input_formats`` for the state; None: untiled)."""

    def measure(name: str) -> StateShare:
        per_device = tiled = total = 0
        for _, leaf, sharding, layout in _held_shards(
            getattr(abstract_state, name),
            getattr(shardings, name),
            getattr(layouts, name) if layouts is not None else None,
        ):
            itemsize = leaf.dtype.itemsize
            shard = sharding.shard_shape(leaf.shape)
            per_device += math.prod(shard) * itemsize
            tiled += tiled_bytes(shard, itemsize, layout)
            total += math.prod(leaf.shape) * itemsize
        return StateShare(per_device, tiled, total)

    parts = {"params": "params", "optimizer": "opt_state", "ema": "ema_params"}
    return {label: measure(name) for label, name in parts.items()}


def state_total(state: Mapping[str, StateShare]) -> StateShare:
    """The parts of :func:`state_bytes` added up."""
    return StateShare(
        per_device=sum(share.per_device for share in state.values()),
        tiled=sum(share.tiled for share in state.values()),
        total=sum(share.total for share in state.values()),
    )


def largest_excess(
    params: Any, shardings: Any, layouts: Any = None, *, count: int = 3
) -> list[tuple[str, tuple[int, ...], str, int]]:
    """The ``count`` params a device holds most bytes of beyond their ideal share (the whole
    param / the devices), in the compiled ``layouts`` where given: ``(path, shape, partition
    spec, bytes held per device)``, largest excess first; none with no excess."""
    rows = []
    for path, leaf, sharding, layout in _held_shards(params, shardings, layouts):
        itemsize = leaf.dtype.itemsize
        held = tiled_bytes(sharding.shard_shape(leaf.shape), itemsize, layout)
        ideal = math.prod(leaf.shape) * itemsize / sharding.num_devices
        if held > ideal:
            name = "/".join(str(getattr(key, "key", key)) for key in path)
            rows.append((held - ideal, name, tuple(leaf.shape), str(sharding.spec), held))
    rows.sort(key=lambda row: row[0], reverse=True)
    return [(name, shape, spec, held) for _, name, shape, spec, held in rows[:count]]


# --- compiling --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StepReport:
    """One compiled step's figures, per device (bytes, FLOPs, seconds).

    ``memory``: ``compiled.memory_analysis()``'s ``argument``, ``output``, ``alias``
    (output bytes that reuse argument buffers: the donated state), ``temp`` and ``code``
    bytes; ``total`` = argument + output - alias + temp + code. ``flops``:
    ``cost_analysis()["flops"]`` (None where XLA gives none: a GPU compile without the
    GPU). ``collectives``: :func:`collectives`; ``kernels``: :func:`custom_calls` of the
    Pallas and cuDNN kernels. ``layouts``: ``compiled.input_formats``' positional part, one
    tree of ``Format`` per argument (the train step's first is the state's; for
    :func:`state_bytes`).
    """

    name: str
    batch_size: int
    memory: dict[str, int]
    flops: float | None
    collectives: dict[str, tuple[int, int]]
    kernels: dict[str, int]
    seconds: float
    layouts: tuple[Any, ...] | None = None


def _memory(compiled: Any) -> dict[str, int]:
    stats = compiled.memory_analysis()
    memory = {
        "argument": int(stats.argument_size_in_bytes),
        "output": int(stats.output_size_in_bytes),
        "alias": int(stats.alias_size_in_bytes),
        "temp": int(stats.temp_size_in_bytes),
        "code": int(stats.generated_code_size_in_bytes),
    }
    memory["total"] = (
        memory["argument"] + memory["output"] - memory["alias"] + memory["temp"] + memory["code"]
    )
    return memory


def _compile(
    name: str, jitted: Any, args: Sequence[Any], batch_size: int, platform: str
) -> StepReport:
    """Lowers and compiles ``jitted`` for ``args`` (abstract; on GPU with
    :data:`GPU_COMPILER_OPTIONS`); XLA's refusal to fit the program into memory is
    :class:`DoesNotFit`, any other refusal :class:`CompileError`."""
    options = GPU_COMPILER_OPTIONS if platform == "gpu" else None
    start = time.perf_counter()
    try:
        compiled = jitted.lower(*args).compile(options)
    except jax.errors.JaxRuntimeError as error:
        message = _one_line(str(error))
        if "RESOURCE_EXHAUSTED" in message or "exceeds" in message or "HBM" in message:
            raise DoesNotFit(f"{name} step: {message}") from error
        raise CompileError(f"{name} step: {message}") from error
    seconds = time.perf_counter() - start
    text = compiled.as_text()
    costs = compiled.cost_analysis() or {}  # None from XLA:GPU without a GPU
    costs = costs[0] if isinstance(costs, (list, tuple)) else costs
    kernels = {
        target: count
        for target, count in custom_calls(text).items()
        if target == "tpu_custom_call" or target.startswith("__cudnn")
    }
    return StepReport(
        name=name,
        batch_size=batch_size,
        memory=_memory(compiled),
        flops=float(costs["flops"]) if "flops" in costs else None,
        collectives=collectives(text),
        kernels=kernels,
        seconds=seconds,
        layouts=tuple(compiled.input_formats[0]),
    )


def example_spec(run: Any) -> dict[str, jax.ShapeDtypeStruct]:
    """The batch the loop feeds ``run``'s steps, as shapes of one row: the keys, shapes
    ``[1, ...]`` and dtypes of one example of the run's own training input pipeline."""
    from mmtx.data.pipeline import create_dataset

    example = next(
        iter(create_dataset(run.config, "train", run.tokenizer, batch_size=1, train=True))
    )
    return {key: jax.ShapeDtypeStruct(value.shape, value.dtype) for key, value in example.items()}


def _rows(spec: Mapping[str, jax.ShapeDtypeStruct], rows: int) -> dict[str, Any]:
    """``spec`` (``[1, ...]`` leaves) with ``rows`` rows."""
    return {k: jax.ShapeDtypeStruct((rows, *v.shape[1:]), v.dtype) for k, v in spec.items()}


def compile_run(
    config: ml_collections.ConfigDict, devices: Sequence[Any], *, eval_step: bool = True
) -> tuple[Any, list[StepReport]]:
    """Builds the run of ``config`` (validated) on a mesh of ``devices`` and compiles its
    train step (global batch ``config.train.batch_size``) and, with ``eval_step``, its eval
    step (``config.eval.batch_size``); returns ``(run, reports)``. Raises
    :class:`UsageError` for a mesh or batch that does not divide over the devices,
    :class:`DoesNotFit` / :class:`CompileError` as XLA refuses a step."""
    from mmtx.nn.platform import mesh_platform
    from mmtx.train import mesh as mesh_lib
    from mmtx.train.build import build

    try:
        mesh = mesh_lib.create_mesh(config.mesh, devices)
        run = build(config, mesh)
    except ValueError as error:
        raise UsageError(_one_line(str(error))) from error
    spec = example_spec(run)
    train_batch = _rows(spec, config.train.batch_size)
    reports = [
        _compile(
            "train",
            run.train_step,
            (run.abstract_state, train_batch),
            config.train.batch_size,
            mesh_platform(mesh),
        )
    ]
    if eval_step:
        eval_batch = _rows(spec, config.eval.batch_size)
        reports.append(
            _compile(
                "eval",
                run.eval_step,
                (run.abstract_state.params, eval_batch),
                config.eval.batch_size,
                mesh_platform(mesh),
            )
        )
    return run, reports


#: :func:`largest_fitting`'s default bound: the search tries at most this many steps.
SEARCH_LIMIT = 2**16


def largest_fitting(fits: Callable[[int], bool], *, limit: int = SEARCH_LIMIT) -> int:
    """The largest ``n`` in ``[1, limit]`` with ``fits(n)``, assuming ``fits`` holds up to
    some size and fails beyond it: ``n`` doubles from 1 until ``fits`` fails (or ``limit``),
    then the gap is bisected. 0 when ``fits(1)`` fails."""
    if not fits(1):
        return 0
    low, high = 1, None
    while high is None:
        if low * 2 > limit:
            return low
        if fits(low * 2):
            low *= 2
        else:
            high = low * 2
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle):
            low = middle
        else:
            high = middle
    return low


# --- the report -------------------------------------------------------------------------------


def _size(value: float) -> str:
    for unit, scale in (("GiB", GIB), ("MiB", MIB), ("KiB", 2**10)):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{int(value)} B"


def _bytes(value: int) -> str:
    """``1.50 MiB (1,572,864 B)``: readable, and exact."""
    return f"{_size(value)} ({value:,} B)"


def report_lines(
    topology: str,
    devices: Sequence[Any],
    run: Any,
    reports: Sequence[StepReport],
) -> list[str]:
    """The command's output: the target, then per step its memory, FLOPs, collectives and
    kernels, per device."""
    device = devices[0]
    kind = device.device_kind
    chip, hbm, peak = chip_of(kind), hbm_per_device(device), peak_per_device(device)
    mesh = dict(run.mesh.shape)
    lines = [
        f"{topology}: {len(devices)} x {kind} ({device.platform}); mesh {mesh}; compute "
        f"{jnp.dtype(run.module.dtype).name}, params {run.config.param_dtype}",
        "compiled ahead of time on this host, nothing run; figures are per device",
    ]
    if hbm is not None:
        lines.append(f"HBM per device: {_bytes(hbm)} ({chip.name}; {chip.source})")
    else:
        lines.append(f"HBM per device: unknown for {kind!r} (not in mmtx.compile.CHIPS)")
    train = next((report for report in reports if report.name == "train"), None)
    state_layouts = train.layouts[0] if train is not None and train.layouts else None
    state = state_bytes(run.abstract_state, run.state_shardings, state_layouts)
    whole = state_total(state)
    held, tiled, ideal = whole.per_device, whole.tiled, whole.total / len(devices)
    parts = ", ".join(f"{name} {_bytes(share.per_device)}" for name, share in state.items())
    lines.append(
        f"state: {parts}; total {_bytes(held)} = {held / ideal:.2f} x the fully sharded "
        f"{_bytes(int(ideal))}"
    )
    if tiled != held:
        lines.append(
            f"  in the compiled layouts (tiles pad the minor dimensions): {_bytes(tiled)} = "
            f"{tiled / ideal:.2f} x the fully sharded"
        )
    sharded = run.mesh.shape["fsdp"] * run.mesh.shape["tensor"] > 1  # else all replicated
    excess = []
    if sharded and (held > 1.05 * ideal or tiled > 1.05 * ideal):
        params_layouts = getattr(state_layouts, "params", None)
        excess = largest_excess(
            run.abstract_state.params, run.state_shardings.params, params_layouts
        )
    if excess:
        lines.append(
            "  params furthest over their ideal share: "
            + "; ".join(
                f"{path} {shape} as {spec}: {_size(size)}" for path, shape, spec, size in excess
            )
        )
    for report in reports:
        memory = report.memory
        lines.append(
            f"{report.name} step (global batch {report.batch_size}, "
            f"{report.batch_size / len(devices):g} per device; compiled in "
            f"{report.seconds:.1f} s):"
        )
        lines.append(
            "  memory: "
            + ", ".join(
                f"{key} {_bytes(memory[key])}"
                for key in ("argument", "output", "alias", "temp", "code")
            )
        )
        if hbm is not None:
            verdict = "fits" if memory["total"] <= hbm else "DOES NOT FIT"
            lines.append(
                f"  total {_bytes(memory['total'])} of {_size(hbm)} HBM "
                f"({100 * memory['total'] / hbm:.1f}%): {verdict}"
            )
        else:
            lines.append(f"  total {_bytes(memory['total'])}")
        lines.append("  flops: " + flops_text(report, run.config, len(devices), peak))
        lines.append(
            "  collectives: "
            + ", ".join(
                f"{kind} {count} ({_size(size)})"
                for kind, (count, size) in report.collectives.items()
            )
        )
        pallas = report.kernels.get("tpu_custom_call", 0)
        cudnn = sum(n for target, n in report.kernels.items() if target.startswith("__cudnn"))
        lines.append(f"  kernels: Pallas (tpu_custom_call) {pallas}, cuDNN {cudnn}")
    return lines


def step_flops(
    report: StepReport, config: ml_collections.ConfigDict, num_devices: int
) -> tuple[float, float]:
    """``(FLOPs, analytic FLOPs)`` of one device's step: the first is the larger of XLA's
    cost analysis and :func:`mmtx.train.flops.analytic_flops` (the train step's ``train``,
    the eval step's ``forward_total``).

    XLA's count is the larger for an unrolled model (it also counts elementwise work and the
    optimizer). XLA's cost analysis counts a loop's body once, not once per trip, so for
    layers under ``nn.scan`` (``model.scan_layers``, the default) or scanned microbatches it
    is a fraction of the step's (a 12-layer tower: about a twelfth); the analytic count is
    then the figure. XLA:GPU gives no count without a GPU."""
    from mmtx.train.flops import analytic_flops

    counted = analytic_flops(config, report.batch_size)
    analytic = counted["train" if report.name == "train" else "forward_total"] / num_devices
    return max(report.flops or 0.0, analytic), analytic


def flops_text(
    report: StepReport, config: ml_collections.ConfigDict, num_devices: int, peak: float | None
) -> str:
    """The report's FLOPs line for one device's step: :func:`step_flops`, naming the count
    it shows and giving the other beside it, and the time it takes at ``peak`` FLOP/s."""
    flops, analytic = step_flops(report, config, num_devices)
    by_analytic = "by mmtx.train.flops.analytic_flops"
    if report.flops is None:
        text = f"{analytic:.4g} per step {by_analytic} (none from XLA:GPU without a GPU)"
    elif report.flops >= analytic:
        text = f"{report.flops:.4g} per step by XLA's cost analysis ({analytic:.4g} {by_analytic})"
    else:
        text = (
            f"{analytic:.4g} per step {by_analytic} (XLA's cost analysis: {report.flops:.4g}, "
            "each loop's body counted once)"
        )
    if peak:
        text += f"; {flops / peak * 1e3:.4g} ms at the {peak / 1e12:g} TFLOP/s bf16 peak (100% MFU)"
    return text


def _over_hbm(reports: Sequence[StepReport], devices: Sequence[Any]) -> str | None:
    """A one-line message for the first step whose total exceeds the device's HBM."""
    hbm = hbm_per_device(devices[0])
    if hbm is None:
        return None
    for report in reports:
        if report.memory["total"] > hbm:
            return (
                f"{report.name} step: {_size(report.memory['total'])} per device exceeds the "
                f"{_size(hbm)} of HBM"
            )
    return None


# --- the command ------------------------------------------------------------------------------


def _has_cudnn() -> bool:
    """Whether this host can load cuDNN (jax asks it for its version when it traces cuDNN
    attention, even for a compile-only GPU)."""
    from jax._src.cudnn.fused_attention_stablehlo import check_cudnn_version

    try:
        check_cudnn_version()
    except RuntimeError:
        return False
    return True


def _flag_value(argv: Sequence[str], name: str) -> str | None:
    """``--name=VALUE`` or ``--name VALUE`` in ``argv`` (the last one wins), or None."""
    found = None
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            found = arg.split("=", 1)[1]
        elif arg == f"--{name}" and i + 1 < len(argv):
            found = argv[i + 1]
    return found


def _parse(argv: Sequence[str], config: ml_collections.ConfigDict) -> flags.FlagValues:
    values = flags.FlagValues()
    flags.DEFINE_string("topology", None, "TPU topology, e.g. v5e:2x2.", flag_values=values)
    flags.DEFINE_boolean(
        "find_batch", False, "Search the largest per-chip batch that fits.", flag_values=values
    )
    flags.DEFINE_integer(
        "per_chip_batch",
        None,
        "Examples per chip: train.batch_size and eval.batch_size become it x the topology's chips.",
        flag_values=values,
    )
    argv = [argv[0], *(a for a in argv[1:] if not a.startswith("--config="))]
    try:
        config_flags.DEFINE_config_dict(
            "config", config, "The run's config.", flag_values=values, sys_argv=argv
        )
        rest = values(argv)
    except (AttributeError, KeyError) as error:
        raise UsageError(f"unknown config field: {_one_line(str(error))}") from error
    except (flags.Error, TypeError, ValueError) as error:
        raise UsageError(_one_line(str(error))) from error
    if rest[1:]:
        raise UsageError(f"unexpected arguments: {rest[1:]}")
    return values


def _find_batch(
    config: ml_collections.ConfigDict, devices: Sequence[Any], out: TextIO
) -> tuple[int, int]:
    """The largest per-chip train batch that fits (see :func:`largest_fitting`), in the
    smallest steps the mesh and ``train.microbatches`` allow; returns ``(per chip, step)``."""
    from mmtx.train import mesh as mesh_lib

    shape = dict(
        zip(mesh_lib.MESH_AXES, mesh_lib.mesh_shape(config.mesh, len(devices)), strict=True)
    )
    divisor = shape["data"] * shape["fsdp"] * config.train.microbatches
    unit = divisor // math.gcd(divisor, len(devices))

    def fits(multiple: int) -> bool:
        trial = copy.deepcopy(config)
        trial.train.batch_size = multiple * unit * len(devices)
        try:
            _, reports = compile_run(trial, devices, eval_step=False)
            over = _over_hbm(reports, devices)  # compiled, but over the chip's memory
            if over:
                raise DoesNotFit(over)
        except DoesNotFit as error:
            print(f"  {multiple * unit} per chip: does not fit ({error})", file=out, flush=True)
            return False
        total = _size(reports[0].memory["total"])
        print(f"  {multiple * unit} per chip: fits ({total} per device)", file=out, flush=True)
        return True

    return largest_fitting(fits) * unit, unit


def main(argv: Sequence[str], stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Runs the command on ``argv`` (``sys.argv``); returns the exit status (0, 1 or 2; see
    the module docstring). The report goes to ``stdout``, an ``error: ...`` line to
    ``stderr``."""
    stdout, stderr = stdout or sys.stdout, stderr or sys.stderr
    if answer_help(argv, __doc__, file=stdout):
        return 0
    try:
        spec, topology = _flag_value(argv[1:], "config"), _flag_value(argv[1:], "topology")
        if not spec or not topology:
            raise UsageError("--config=FILE[:ARG] and --topology=NAME (e.g. v5e:2x2) are needed")
        platform = "gpu" if topology.partition(":")[0] in GPU_SPECS else "tpu"
        try:
            config = config_lib.load_config(spec)
        except (OSError, KeyError, TypeError, ValueError) as error:
            raise UsageError(f"--config={spec}: {_one_line(str(error))}") from error
        values = _parse(argv, config)
        argv_text = " ".join(argv[1:])
        try:
            config = config_lib.validate(config_lib.split_comma_lists(values["config"].value))
            # What the topology's platform can run (cudnn, pallas), checked early: a usage
            # error before its devices are made (build() checks again, for the same platform).
            from mmtx.model_checks import check_runnable

            check_runnable(config, platform)
        except (TypeError, ValueError) as error:
            raise UsageError(_one_line(str(error))) from error
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()  # absl logging and grain read absl's global flags
        if not flags.FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)
        if not xla_bridge.backends_are_initialized():
            # The host runs nothing but the CPU backend: no TPU or CUDA runtime is started
            # (their compile-only devices come from the topology, not from a backend).
            jax.config.update("jax_platforms", "cpu")
        devices = topology_devices(topology)
        per_chip = values["per_chip_batch"].value
        if per_chip is not None:
            given = [
                f for f in ("train.batch_size", "eval.batch_size") if f"--config.{f}" in argv_text
            ]
            if given:
                raise UsageError(f"--per_chip_batch sets {given[0]}; give one or the other")
            if per_chip < 1:
                raise UsageError(f"--per_chip_batch={per_chip}: must be a positive integer")
            config.train.batch_size = config.eval.batch_size = per_chip * len(devices)
        if platform == "gpu" and config.attention.implementation == "auto" and not _has_cudnn():
            config.attention.implementation = "xla"
            print(
                "note: attention.implementation auto -> xla: jax checks cuDNN's version when it "
                "traces cuDNN attention, and this host has no cuDNN (on the GPU, auto takes "
                "cuDNN flash attention where it can)",
                file=stdout,
            )
        if values["find_batch"].value:
            print(f"{topology}: searching the largest per-chip train batch", file=stdout)
            best, unit = _find_batch(config, devices, stdout)
            if best == 0:
                raise DoesNotFit(f"not even {unit} example(s) per chip fit")
            bound = (
                " (the search's bound: a larger one may fit)" if best >= SEARCH_LIMIT * unit else ""
            )
            print(
                f"largest per-chip train batch that fits: {best}{bound} (global "
                f"{best * len(devices)}; searched in steps of {unit})",
                file=stdout,
            )
            return 0
        try:
            run, reports = compile_run(config, devices)
        except UsageError as error:
            if per_chip is None and "batch_size" in str(error):
                raise UsageError(
                    f"{error}; --per_chip_batch=N sets both batches to N x the {len(devices)} chips"
                ) from error
            raise
        for line in report_lines(topology, devices, run, reports):
            print(line, file=stdout)
        over = _over_hbm(reports, devices)
        if over:
            raise DoesNotFit(over)
    except UsageError as error:
        print(f"error: {error}", file=stderr, flush=True)
        return 2
    except (DoesNotFit, CompileError) as error:
        print(f"error: {error}", file=stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
