"""Where an mmtx train step's time goes, per part of the model: a ``jax.profiler`` trace of a
few steps, each XLA op attributed to the layer it computes by its HLO ``op_name``.

Usage, from the repository root::

    .venv/bin/python benchmarks/profile_step.py                      # configs/bench_clip.py
    .venv/bin/python benchmarks/profile_step.py --cores 1            # pinned to one core
    .venv/bin/python benchmarks/profile_step.py --config=configs/base.py --top 20

The step is built and compiled as ``benchmarks/train_step.py`` builds it, warmed up, timed,
then ``--steps`` steps are traced. Each traced op's duration is summed per op per step, and the
op is put in one part by the ``op_name`` XLA kept from the JAX program (a fusion takes its
root's): the MLP's and the attention's projection matmuls (``matmuls``, with the copies their
gradients need), the attention core (logits, softmax, values), ``layernorm``,
``activation`` (the MLP's GELU), the ``embedding`` stems, the ``heads_and_loss`` after the
towers, and the ``optimizer`` (clipping, AdamW; ops outside the model). Each part is split
into the forward and the backward (``transpose(jvp(...))``) pass. With ``--cores 1`` the
process is pinned to one core (``os.sched_setaffinity``) before JAX starts, so the op times add
up to the step time; on several cores XLA runs independent ops (the two towers) at once and
the sum exceeds it. ``benchmarks/peers/open_clip_profile.py`` makes the same table for
open_clip's step from ``torch.profiler``.

Ends with one JSON line: ``step_ms`` (median of the timed steps), ``op_ms`` (the ops' summed
time per step), ``parts`` (``{part: {"forward": ms, "backward": ms}}``), ``top_ops``.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import re
import statistics
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

# Only the standard library at module level: benchmarks/peers/open_clip_profile.py imports
# PARTS and format_table from here in the peers' environment, which has no mmtx or JAX.
PARTS = (
    "matmuls",
    "attention_core",
    "layernorm",
    "activation",
    "embedding",
    "heads_and_loss",
    "optimizer",
    "other",
)
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*$")
_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$")
_OP_NAME = re.compile(r'op_name="([^"]+)"')
_CALLS = re.compile(r"calls=%?([\w.\-]+)")


def op_names_from_hlo(hlo_text: str) -> dict[str, str]:
    """Instruction name -> the ``op_name`` of its metadata (``""`` when it has none), for
    every instruction of a compiled module's text.

    A fusion without metadata of its own takes its fused computation's root's (else the
    last ``op_name`` in that computation)."""
    computations: dict[str, list[str]] = {}
    current: list[str] | None = None
    own: dict[str, str] = {}
    calls: dict[str, str] = {}
    for line in hlo_text.splitlines():
        head = _COMPUTATION.match(line)
        if head:
            current = computations.setdefault(head.group(1), [])
            continue
        if line.strip() == "}":
            current = None
            continue
        instruction = _INSTRUCTION.match(line)
        if not instruction:
            continue
        if current is not None:
            current.append(line)
        name = instruction.group(1)
        own.setdefault(name, "")
        found = _OP_NAME.search(line)
        if found and not own[name]:
            own[name] = found.group(1)
        called = _CALLS.search(line)
        if called:
            calls.setdefault(name, called.group(1))
    for name, computation in calls.items():
        if own[name]:
            continue
        body = computations.get(computation, [])
        root = [line for line in body if line.lstrip().startswith("ROOT")]
        for line in root + body[::-1]:
            found = _OP_NAME.search(line)
            if found:
                own[name] = found.group(1)
                break
    return own


def part_of(op_name: str | None) -> tuple[str, str]:
    """``(part, "forward" | "backward")`` for an HLO ``op_name``: ``other`` without one,
    ``optimizer`` outside the differentiated function, ``heads_and_loss`` inside it but
    outside the model's towers."""
    if not op_name:
        return "other", "forward"
    direction = "backward" if "transpose(jvp(" in op_name else "forward"
    if "jvp(" not in op_name:
        return "optimizer", "forward"
    if "MultiModalTransformer" not in op_name:
        return "heads_and_loss", direction
    path = op_name.split("MultiModalTransformer", 1)[1]
    if re.search(r"/(mlp/fc\d|attention/(query|key|value|out))/", path):
        part = "matmuls"
    elif "/attention/" in path:
        part = "attention_core"
    elif re.search(r"/norm\d?/", path):
        part = "layernorm"
    elif "/mlp/" in path:
        part = "activation"
    elif "/tower/" in path and "/encoder/" not in path:
        part = "embedding"
    else:
        part = "heads_and_loss"
    return part, direction


def op_durations(trace_path: Path, steps: int, instructions: Iterable[str]) -> dict[str, float]:
    """Op name -> milliseconds per step, summed over the events of a Perfetto trace named
    after an instruction of the module (not the runtime's own bookkeeping)."""
    with gzip.open(trace_path) as file:
        events = json.load(file)["traceEvents"]
    names = set(instructions)
    total: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get("ph") == "X" and event["name"] in names:
            total[event["name"]] += event["dur"] / 1e3
    return {name: ms / steps for name, ms in total.items()}


def by_part(
    durations: Mapping[str, float], op_names: Mapping[str, str]
) -> dict[str, dict[str, float]]:
    """``{part: {"forward": ms, "backward": ms}}`` over :data:`PARTS`."""
    table = {part: {"forward": 0.0, "backward": 0.0} for part in PARTS}
    for name, ms in durations.items():
        part, direction = part_of(op_names.get(name))
        table[part][direction] += ms
    return table


def format_table(table: Mapping[str, Mapping[str, float]]) -> list[str]:
    """Lines: each part's forward, backward and total ms per step, and the total."""
    lines = [f"{'part':<16} {'forward':>9} {'backward':>9} {'total':>9}"]
    for part, row in table.items():
        total = row["forward"] + row["backward"]
        lines.append(f"{part:<16} {row['forward']:9.1f} {row['backward']:9.1f} {total:9.1f}")
    overall = sum(row["forward"] + row["backward"] for row in table.values())
    lines.append(f"{'all ops':<16} {'':>9} {'':>9} {overall:9.1f}")
    return lines


def profile(
    config: Any, *, steps: int, warmup: int, trace_dir: Path
) -> tuple[list[float], dict[str, float], dict[str, str]]:
    """Times ``warmup`` + 5 steps, traces ``steps`` more; returns (step seconds, op ms per
    step, op names)."""
    import jax
    import train_step  # benchmarks/, beside this file

    setup = train_step.build_step(config)
    compiled, _ = train_step.compile_step(setup, dict(train_step.DEFAULT_XLA_OPTIONS))
    timer = train_step.StepTimer(setup, compiled)
    timer.run(warmup)
    times = timer.run(5)
    jax.profiler.start_trace(str(trace_dir), create_perfetto_trace=True)
    timer.run(steps)
    jax.profiler.stop_trace()
    traces = sorted(trace_dir.glob("**/*.trace.json.gz"))
    if not traces:
        raise RuntimeError(f"jax.profiler wrote no Perfetto trace under {trace_dir}")
    op_names = op_names_from_hlo(compiled.as_text())
    return times, op_durations(traces[-1], steps, op_names), op_names


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/bench_clip.py")
    parser.add_argument("--steps", type=int, default=3, help="traced steps")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--cores", type=int, default=0, help="pin to this many cores (0: all)")
    parser.add_argument("--top", type=int, default=10, help="slowest single ops listed")
    parser.add_argument("--trace_dir", default=None, help="default: a temporary directory")
    args, rest = parser.parse_known_args(argv)
    overrides = [arg for arg in rest if arg.startswith("--config.")]
    if len(overrides) != len(rest):
        parser.error(f"unrecognised arguments: {[a for a in rest if a not in overrides]}")
    return args, overrides


def pin_to_cores(cores: int, available: Iterable[int] | None = None) -> list[int]:
    """Restricts this process to its first ``cores`` CPUs (before JAX starts); returns them."""
    allowed = sorted(os.sched_getaffinity(0) if available is None else available)
    chosen = allowed[:cores]
    os.sched_setaffinity(0, chosen)
    return chosen


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    if args.cores:
        print(f"pinned to CPUs {pin_to_cores(args.cores)}")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import train_step

    config = train_step.load_config(args.config, overrides)
    with tempfile.TemporaryDirectory() as scratch:
        trace_dir = Path(args.trace_dir or scratch)
        times, durations, op_names = profile(
            config, steps=args.steps, warmup=args.warmup, trace_dir=trace_dir
        )
    table = by_part(durations, op_names)
    step_ms = statistics.median(times) * 1e3
    op_ms = sum(durations.values())
    print(f"{train_step.describe(config)}: step {step_ms:.1f} ms, ops {op_ms:.1f} ms per step")
    print("\n".join(format_table(table)))
    top = sorted(durations.items(), key=lambda item: -item[1])[: args.top]
    for name, ms in top:
        part, direction = part_of(op_names.get(name))
        print(f"{ms:8.2f} ms  {name:<28} {part} ({direction})  {op_names.get(name, '')[-70:]}")
    result = {
        "config": train_step.describe(config),
        "cores": args.cores or len(os.sched_getaffinity(0)),
        "step_ms": round(step_ms, 2),
        "op_ms": round(op_ms, 2),
        "parts": {p: {k: round(v, 2) for k, v in row.items()} for p, row in table.items()},
        "top_ops": [{"name": n, "ms": round(ms, 3), "op_name": op_names.get(n)} for n, ms in top],
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    from mmtx import launch

    launch.restart_with_tuned_malloc()
    main()
