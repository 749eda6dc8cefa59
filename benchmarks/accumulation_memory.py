"""Peak memory and time of the full train step against the number of microbatches k.

Usage, from the repository root::

    .venv/bin/python benchmarks/accumulation_memory.py [--config configs/base.py[:variant]]
        [--batch_size 64] [--microbatches 1,2,4,8] [--repeats 3] [--rounds 1]
        [--memory auto|compiled|device] [--isolate] [--out_dir docs/research]

For every ``k`` the config's ``train.batch_size`` is set to ``--batch_size`` (the global batch,
fixed) and ``train.microbatches`` to ``k``; the module, optimizer and train step are built as
``mmtx/train/loop.py`` builds them (:func:`mmtx.train.build.build`: ``make_train_step`` under
the mesh's sharding rules, ``jax.jit`` with the state's shardings and ``donate_argnums=0``)
and the step is lowered and compiled from abstract
inputs (``jax.eval_shape`` of the state's init, ``ShapeDtypeStruct`` batch), so no state or
batch is materialised to size it.

Memory comes from XLA's compiled memory analysis (``compiled.memory_analysis()``):

* ``temp``: ``temp_size_in_bytes``, the step's own buffers (activations, gradients, the output
  cache, optimizer temporaries). This is what accumulation shrinks.
* ``total``: arguments + outputs + temp - aliased bytes (with the state donated, the new
  state reuses the old one's buffers, so the state is counted once).

Both are XLA's buffer assignment, not a measurement. Where the device reports
``memory_stats()["peak_bytes_in_use"]`` (GPU) that is recorded too; it cannot be reset, so each
``k`` then runs in a fresh subprocess (``--isolate`` forces that anywhere), and it includes
the materialised state and batch.

Time: the compiled step is run on a real state (``Run.init_state``) and a real batch from
the config's dataset, once to warm up, then ``--repeats`` times; the median is reported
(``--repeats 0`` skips timing). With ``--rounds R > 1`` every k is compiled and warmed up
first, then the k are timed in turn, ``--repeats`` steps each, R times over (k = 1, 4, 1, 4,
...), so that a change in the machine's load (a shared CPU) hits every k alike: the step time
is then the median over all rounds, and each k's ratio to k = 1 is also taken round by round
(its range is reported). The output cache costs about one extra forward pass (roughly a
third more compute than k = 1).

Writes ``accumulation_memory.md`` (a table per k: microbatch size, temp and total MiB, temp
relative to k = 1, step ms and its ratio to k = 1) and ``accumulation_memory.png`` to
``--out_dir``, prints the table, and ends with one JSON line holding the numbers and
``memory_falls_with_k`` (temp memory strictly decreasing in k).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import itertools
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from mmtx import config as config_lib
from mmtx import launch, output_paths
from mmtx.data.pipeline import create_dataset
from mmtx.data.tokenizer import create_tokenizer
from mmtx.train.build import Run, build
from mmtx.train.state import TrainState
from mmtx.train.step import unroll_limit

DEFAULT_CONFIG = "configs/base.py"
DEFAULT_MICROBATCHES = (1, 2, 4, 8)
MEMORY_SOURCES = ("auto", "compiled", "device")
MD_NAME = "accumulation_memory.md"
PNG_NAME = "accumulation_memory.png"
MIB = 2**20
MISSING = "—"


@dataclasses.dataclass(frozen=True)
class Measurement:
    """One k. Memory in MiB from the compiled memory analysis; ``None`` values have a note."""

    microbatches: int
    microbatch_size: int
    temp_mib: float | None = None
    total_mib: float | None = None
    argument_mib: float | None = None
    output_mib: float | None = None
    alias_mib: float | None = None
    xla_peak_mib: float | None = None  # memory_analysis().peak_memory_in_bytes, as reported
    device_peak_mib: float | None = None  # memory_stats()["peak_bytes_in_use"], GPU
    step_ms: float | None = None
    compile_s: float | None = None
    round_ms: tuple[float, ...] = ()  # per-round medians, with --rounds > 1
    note: str = ""


# --- command line -------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--config", default=DEFAULT_CONFIG, help="configs/x.py[:variant] or a JSON file")
    add("--batch_size", type=int, default=64, help="global batch, fixed for every k")
    add("--microbatches", type=_int_list, default=list(DEFAULT_MICROBATCHES), help="k values")
    add("--repeats", type=int, default=3, help="timed steps per k (median); 0 = no timing")
    add("--rounds", type=int, default=1, help="time the k interleaved, this many rounds")
    add("--memory", choices=MEMORY_SOURCES, default="auto", help="also read the device peak")
    add("--isolate", action="store_true", help="measure each k in a fresh subprocess")
    add("--out_dir", type=Path, default=Path("docs/research"))
    add("--overwrite", action="store_true", help="replace the report files if they exist")
    add("--child", type=int, default=None, help=argparse.SUPPRESS)  # k, internal
    args = parser.parse_args(list(argv))
    if args.repeats < 0:
        parser.error("--repeats must be >= 0")
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    if args.rounds > 1 and args.isolate:
        parser.error("--rounds > 1 times every k in one process; it cannot go with --isolate")
    if args.batch_size < 1:
        parser.error("--batch_size must be positive")
    bad = [k for k in args.microbatches if args.batch_size % k]
    if bad:
        parser.error(f"--batch_size={args.batch_size} does not split into k={bad} microbatches")
    args.microbatches = sorted(set(args.microbatches))
    return args


# --- building the step as the loop does ----------------------------------------------------


@dataclasses.dataclass
class Setup:
    spec: str
    config: ml_collections.ConfigDict
    run: Run
    abstract_state: TrainState
    abstract_batch: dict[str, jax.ShapeDtypeStruct]
    data_sharding: Any


def load_config(spec: str, batch_size: int, k: int) -> ml_collections.ConfigDict:
    config = config_lib.load_config(spec)
    config.train.batch_size = batch_size
    config.train.microbatches = k
    return config_lib.validate(config)


def make_dataset(config: ml_collections.ConfigDict, batch_size: int) -> Any:
    tokenizer = create_tokenizer(config.tokenizer.type, config.tokenizer.model_file)
    return create_dataset(config, "train", tokenizer, batch_size=batch_size, train=True)


@functools.cache
def setup(spec: str, batch_size: int, k: int) -> Setup:
    """Everything the step needs, abstract (cached: the report reuses k's setup)."""
    config = load_config(spec, batch_size, k)
    run = build(config)
    # The batch's keys, shapes and dtypes from one example of the real pipeline.
    example = next(iter(make_dataset(config, 1)))
    abstract_batch = {
        name: jax.ShapeDtypeStruct((batch_size, *x.shape[1:]), x.dtype)
        for name, x in example.items()
    }
    return Setup(
        spec=spec,
        config=config,
        run=run,
        abstract_state=run.abstract_state,
        abstract_batch=abstract_batch,
        data_sharding=run.data_sharding,
    )


def compile_step(s: Setup) -> Any:
    """The train step jitted exactly as the loop jits it, compiled from abstract inputs."""
    return s.run.train_step.lower(s.abstract_state, s.abstract_batch).compile()


# --- one measurement -----------------------------------------------------------------------


def device_peak_bytes(device: jax.Device) -> int | None:
    """The device's ``peak_bytes_in_use`` since the process started, if it reports one."""
    stats = device.memory_stats()
    return None if not stats else stats.get("peak_bytes_in_use")


@functools.cache
def _initial_state(spec: str, batch_size: int) -> TrainState:
    """The real initial state (``Run.init_state``); it does not depend on k, so one
    process initialises it once and each k steps a copy (the step donates its state)."""
    s = setup(spec, batch_size, 1)
    return s.run.init_state()


class Runner:
    """A compiled step with its own real state and batch, warmed up by one step; each
    :meth:`time` call runs more steps on it (the step donates its state, so it is carried)."""

    def __init__(self, compiled: Any, s: Setup, reuse_state: bool) -> None:
        """``reuse_state``: step a copy of the process's shared initial state rather than
        initialising one (which would compile the init again); off where the device peak is
        read, so that it counts one state."""
        if reuse_state:
            master = _initial_state(s.spec, s.config.train.batch_size)
            self.state = jax.tree.map(lambda x: x.copy(), master)
        else:
            self.state = s.run.init_state()
        batch = next(iter(make_dataset(s.config, s.config.train.batch_size)))
        self.batch = jax.device_put(batch, s.data_sharding)
        self.compiled = compiled
        self.time(1)  # warm-up

    def time(self, repeats: int) -> float | None:
        """Median wall time in ms of ``repeats`` steps (None for 0)."""
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            self.state, metrics = self.compiled(self.state, self.batch)
            jax.block_until_ready((self.state, metrics))
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times) if times else None


def time_steps(compiled: Any, s: Setup, repeats: int, reuse_state: bool) -> float | None:
    """Median wall time in ms of ``repeats`` steps on a real state and batch, after a warm-up
    step (with ``repeats == 0``: only the warm-up, for the device peak)."""
    return Runner(compiled, s, reuse_state).time(repeats)


def compile_and_size(args: argparse.Namespace, k: int) -> tuple[Any, dict[str, Any]]:
    """The compiled step for ``k`` microbatches and its memory fields of :class:`Measurement`."""
    s = setup(args.config, args.batch_size, k)
    started = time.perf_counter()
    compiled = compile_step(s)
    compile_s = time.perf_counter() - started
    stats = compiled.memory_analysis()
    total = (
        stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        + stats.temp_size_in_bytes
        - stats.alias_size_in_bytes
    )
    xla_peak = getattr(stats, "peak_memory_in_bytes", None)
    common = dict(
        microbatches=k,
        microbatch_size=args.batch_size // k,
        temp_mib=stats.temp_size_in_bytes / MIB,
        total_mib=total / MIB,
        argument_mib=stats.argument_size_in_bytes / MIB,
        output_mib=stats.output_size_in_bytes / MIB,
        alias_mib=stats.alias_size_in_bytes / MIB,
        xla_peak_mib=None if xla_peak is None else xla_peak / MIB,
        compile_s=compile_s,
    )
    return compiled, common


def measure(args: argparse.Namespace, k: int, source: str) -> Measurement:
    """Compiles the step for ``k`` microbatches, sizes it, and times it."""
    s = setup(args.config, args.batch_size, k)
    compiled, common = compile_and_size(args, k)
    if args.repeats == 0 and source != "device":
        return Measurement(**common)
    try:
        step_ms = time_steps(compiled, s, args.repeats, reuse_state=source != "device")
    except jax.errors.JaxRuntimeError as err:  # out of device memory, typically
        return Measurement(**common, note=f"run failed: {str(err).splitlines()[0][:120]}")
    peak = device_peak_bytes(jax.devices()[0]) if source == "device" else None
    return Measurement(
        **common, step_ms=step_ms, device_peak_mib=None if peak is None else peak / MIB
    )


def measure_in_subprocess(k: int, argv: Sequence[str], source: str) -> Measurement:
    """Runs :func:`measure` in a fresh Python process (so device peak counters start at 0)."""
    command = [sys.executable, __file__, *argv, "--memory", source, "--child", str(k)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1][:120]
        note = f"failed (exit {done.returncode}): {reason}"
        return Measurement(microbatches=k, microbatch_size=-1, note=note)
    return Measurement(**json.loads(lines[-1]))


def resolve_memory_source(requested: str) -> str:
    if requested != "auto":
        return requested
    return "device" if device_peak_bytes(jax.devices()[0]) is not None else "compiled"


def measure_interleaved(args: argparse.Namespace) -> list[Measurement]:
    """Every k compiled, sized and warmed up, then timed in ``args.rounds`` interleaved rounds
    of ``args.repeats`` steps each; ``step_ms`` is the median over all rounds' medians."""
    runners, sized = {}, {}
    for k in args.microbatches:
        compiled, sized[k] = compile_and_size(args, k)
        runners[k] = Runner(compiled, setup(args.config, args.batch_size, k), reuse_state=True)
        print(f"k={k:>3}: compiled in {sized[k]['compile_s']:.1f} s", file=sys.stderr, flush=True)
    rounds: dict[int, list[float]] = {k: [] for k in args.microbatches}
    for r in range(args.rounds):
        for k in args.microbatches:
            rounds[k].append(runners[k].time(args.repeats))
        line = ", ".join(f"k={k} {rounds[k][-1]:,.1f} ms" for k in args.microbatches)
        print(f"round {r + 1}/{args.rounds}: {line}", file=sys.stderr, flush=True)
    return [
        Measurement(**sized[k], step_ms=statistics.median(rounds[k]), round_ms=tuple(rounds[k]))
        for k in args.microbatches
    ]


def round_ratio_range(results: Sequence[Measurement], m: Measurement) -> tuple[float, float] | None:
    """(min, max) over the rounds of ``m``'s step time over k = 1's in the same round."""
    ref = reference(results)
    if ref is None or not m.round_ms or len(ref.round_ms) != len(m.round_ms):
        return None
    per_round = [t / t1 for t, t1 in zip(m.round_ms, ref.round_ms, strict=True)]
    return min(per_round), max(per_round)


def run_sweep(args: argparse.Namespace, argv: Sequence[str], source: str) -> list[Measurement]:
    isolate = args.isolate or source == "device"
    if args.rounds > 1 and args.repeats and not isolate:
        results = measure_interleaved(args)
        for result in results:
            print(_progress_line(result), file=sys.stderr, flush=True)
        return results
    results = []
    for k in args.microbatches:
        if isolate:
            result = measure_in_subprocess(k, argv, source)
        else:
            result = measure(args, k, source)
        print(_progress_line(result), file=sys.stderr, flush=True)
        results.append(result)
    return results


def _progress_line(m: Measurement) -> str:
    return (
        f"k={m.microbatches:>3} (microbatch {m.microbatch_size}): temp {_number(m.temp_mib)} MiB, "
        f"total {_number(m.total_mib)} MiB, step {_number(m.step_ms)} ms, "
        f"compile {_number(m.compile_s)} s {m.note}"
    )


# --- analysis ------------------------------------------------------------------------------


def _ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or reference == 0:
        return None
    return value / reference


def reference(results: Sequence[Measurement]) -> Measurement | None:
    """The k = 1 measurement (the baseline of every ratio), if it was run."""
    return next((m for m in results if m.microbatches == 1), None)


def ratios(results: Sequence[Measurement], m: Measurement) -> dict[str, float | None]:
    ref = reference(results)
    if ref is None:
        return {"temp": None, "total": None, "step": None}
    return {
        "temp": _ratio(m.temp_mib, ref.temp_mib),
        "total": _ratio(m.total_mib, ref.total_mib),
        "step": _ratio(m.step_ms, ref.step_ms),
    }


def memory_falls_with_k(results: Sequence[Measurement]) -> bool:
    """Temp memory strictly decreasing in k (results are in increasing k)."""
    temps = [m.temp_mib for m in results]
    if len(temps) < 2 or any(t is None for t in temps):
        return False
    return all(b < a for a, b in itertools.pairwise(temps))


# --- output --------------------------------------------------------------------------------


def _number(value: float | None, digits: int = 1) -> str:
    return MISSING if value is None else f"{value:,.{digits}f}"


def _times(value: float | None) -> str:
    return MISSING if value is None else f"{value:.2f}×"


def _times_range(bounds: tuple[float, float] | None) -> str:
    return MISSING if bounds is None else f"{bounds[0]:.2f}–{bounds[1]:.2f}×"


def markdown_table(results: Sequence[Measurement], source: str) -> str:
    device = source == "device"
    interleaved = any(m.round_ms for m in results)
    header = ["k", "microbatch", "temp MiB", "total MiB", "temp × k=1"]
    header += ["device peak MiB"] if device else []
    header += ["step ms", "step × k=1"]
    header += ["step × k=1, per round"] if interleaved else []
    rows = [header, ["---:"] * len(header)]
    for m in results:
        r = ratios(results, m)
        row = [str(m.microbatches), str(m.microbatch_size), _number(m.temp_mib)]
        row += [_number(m.total_mib), _times(r["temp"])]
        row += [_number(m.device_peak_mib)] if device else []
        row += [_number(m.step_ms), _times(r["step"])]
        row += [_times_range(round_ratio_range(results, m))] if interleaved else []
        rows.append(row)
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def model_summary(args: argparse.Namespace) -> dict[str, Any]:
    """The config's variant, model size and shapes (from abstract params only)."""
    s = setup(args.config, args.batch_size, 1)
    params = jax.tree.leaves(s.abstract_state.params)
    num_params = int(sum(np.prod(p.shape) for p in params))
    param_bytes = sum(np.prod(p.shape) * p.dtype.itemsize for p in params)
    return {
        "variant": s.config.variant,
        "modalities": list(s.config.model.modalities),
        "fusion": s.config.fusion.type,
        "dtype": s.config.dtype,
        "num_params": num_params,
        "params_mib": round(float(param_bytes) / MIB, 2),
        "batch": {k: list(v.shape) for k, v in s.abstract_batch.items()},
    }


def markdown_report(
    results: Sequence[Measurement],
    args: argparse.Namespace,
    source: str,
    command: str,
    model: dict[str, Any],
) -> str:
    device = jax.devices()[0]
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    falls = memory_falls_with_k(results)
    lines = [
        "# Gradient accumulation: train-step memory and time against k",
        "",
        f"Generated by `benchmarks/accumulation_memory.py` on {stamp}.",
        "",
        f"- Command: `{command}`",
        f"- Device: {device.device_kind} (platform `{device.platform}`, "
        f"{jax.device_count()} device(s), {os.cpu_count()} host CPUs); jax {jax.__version__}",
        f"- Model: `{args.config}` (variant `{model['variant']}`, "
        f"{'+'.join(model['modalities'])}, {model['fusion']} fusion, dtype {model['dtype']}), "
        f"{model['num_params']:,} params ({model['params_mib']:.1f} MiB); "
        f"global batch {args.batch_size} for every k (`config.train.microbatches = k`).",
        "- Program: the full train step (forward, backward, AdamW update) jitted as "
        "`mmtx/train/loop.py` does (state shardings, `donate_argnums=0`), compiled from "
        "abstract inputs.",
        "- Memory (MiB): XLA compiled memory analysis (`memory_analysis()`), an estimate from "
        "buffer assignment, not a measured peak. *temp*: `temp_size_in_bytes` (activations, "
        "gradients, output cache, optimizer temporaries); *total*: arguments + outputs + temp − "
        "aliased (the donated state is counted once)."
        + (
            ' *device peak*: `memory_stats()["peak_bytes_in_use"]` in a fresh process per k '
            "(includes the materialised state and batch)."
            if source == "device"
            else ""
        ),
        "- Time (ms): median of "
        f"{args.repeats} step(s) on a real state and batch after one warm-up step "
        "(compile excluded), `block_until_ready`"
        + (
            f"; the k timed in turn, {args.rounds} rounds: step ms is the median of the "
            "rounds' medians, *per round* the range over the rounds of the ratio to k = 1 "
            "in the same round."
            if any(m.round_ms for m in results)
            else "."
        )
        if args.repeats
        else "- Time: not measured (`--repeats 0`).",
        "",
        markdown_table(results, source),
        "",
        f"Temp memory strictly decreasing in k: **{'yes' if falls else 'no'}** "
        "(`memory_falls_with_k`).",
    ]
    notes = [f"- k={m.microbatches}: {m.note}" for m in results if m.note]
    unroll = unroll_limit(setup(args.config, args.batch_size, 1).config)
    rolled = [m.microbatches for m in results if m.microbatches > max(unroll, 1)]
    if device.platform == "cpu" and args.repeats and "image" in model["modalities"] and rolled:
        notes.append(
            f"- CPU step times: for k = {', '.join(map(str, rolled))} (above "
            f"the unroll limit {unroll}, `train.accumulation_unroll`) the backward runs inside "
            "`lax.scan`, where XLA:CPU computes convolution gradients (the image stem) several "
            "times slower than outside a loop; the time ratios then exceed the ~one extra "
            "forward pass the output cache costs. See benchmarks/README.md."
        )
    if notes:
        lines += ["", "Notes:", "", *notes]
    lines += ["", f"![memory and step time against k]({PNG_NAME})", ""]
    return "\n".join(lines)


def plot(results: Sequence[Measurement], args: argparse.Namespace, source: str, path: Path) -> None:
    """Memory (temp, total, device peak) and step time against k (log2 x axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_mem, ax_time) = plt.subplots(1, 2, figsize=(11, 4.5))
    series = [("temp", "temp_mib"), ("total", "total_mib")]
    if source == "device":
        series.append(("device peak", "device_peak_mib"))
    for label, field in series:
        points = [(m.microbatches, getattr(m, field)) for m in results]
        points = [(k, v) for k, v in points if v is not None]
        if points:
            ax_mem.plot(*zip(*points, strict=True), marker="o", label=label)
    timed = [(m.microbatches, m.step_ms) for m in results if m.step_ms is not None]
    if timed:
        ax_time.plot(*zip(*timed, strict=True), marker="o", color="C3", label="step")
    ax_mem.set(ylabel="memory (MiB, compiled memory analysis)", title="memory", ylim=(0, None))
    ax_time.set(ylabel="train step time (ms, median)", title="time", ylim=(0, None))
    for ax in (ax_mem, ax_time):
        ax.set_xscale("log", base=2)
        ax.set_xticks([m.microbatches for m in results], [str(m.microbatches) for m in results])
        ax.set_xlabel(f"microbatches k (global batch {args.batch_size})")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle(f"{args.config}, batch {args.batch_size}, on {jax.devices()[0].device_kind}")
    fig.tight_layout()
    with output_paths.atomic_output(path) as temporary:
        fig.savefig(temporary, dpi=120, format="png")
    plt.close(fig)


def raw_numbers(results: Sequence[Measurement]) -> list[dict[str, Any]]:
    rows = []
    for m in results:
        row = {
            key: round(value, 3) if isinstance(value, float) else value
            for key, value in dataclasses.asdict(m).items()
        }
        row["round_ms"] = [round(value, 3) for value in m.round_ms]
        bounds = round_ratio_range(results, m)
        row["step_ratio_range_vs_k1"] = None if bounds is None else [round(b, 3) for b in bounds]
        row.update(
            {
                f"{name}_ratio_vs_k1": None if value is None else round(value, 3)
                for name, value in ratios(results, m).items()
            }
        )
        rows.append(row)
    return rows


def command_line(argv: Sequence[str]) -> str:
    """How this run was started, with paths relative to the working directory when inside it."""

    def short(path: str) -> str:
        relative = os.path.relpath(path)
        return path if relative.startswith("..") else relative

    return shlex.join([short(sys.executable), short(__file__), *argv])


# --- entry point ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the sweep, writes the report and plot; returns what the final JSON line prints."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # A GPU parent must not grab most of the memory before its measuring subprocesses start.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    args = parse_args(argv)
    if args.child is not None:
        result = measure(args, args.child, args.memory)
        print(json.dumps(dataclasses.asdict(result)))
        return {}

    output_paths.check_report_paths(
        [args.out_dir / MD_NAME, args.out_dir / PNG_NAME], overwrite=args.overwrite
    )
    source = resolve_memory_source(args.memory)
    results = run_sweep(args, argv, source)
    model = model_summary(args)
    command = command_line(argv)

    report = markdown_report(results, args, source, command, model)
    output_paths.write_text(args.out_dir / MD_NAME, report)
    plot(results, args, source, args.out_dir / PNG_NAME)

    device = jax.devices()[0]
    payload = {
        "command": command,
        "device": {"kind": device.device_kind, "platform": device.platform},
        "jax": jax.__version__,
        "memory_source": source,
        "config": {
            "config": args.config,
            "batch_size": args.batch_size,
            "microbatches": args.microbatches,
            "repeats": args.repeats,
            "rounds": args.rounds,
            **{key: model[key] for key in ("variant", "dtype", "num_params", "params_mib")},
        },
        "results": raw_numbers(results),
        "memory_falls_with_k": memory_falls_with_k(results),
    }
    print(markdown_table(results, source))
    print(json.dumps(payload))
    return payload


if __name__ == "__main__":
    launch.restart_with_tuned_malloc()
    main()
