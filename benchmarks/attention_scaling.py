"""Forward+backward time and peak memory of the attention kernels against sequence length.

Usage, from the repository root::

    .venv/bin/python benchmarks/attention_scaling.py [--lengths 512,1024,...] [--repeats 3]
        [--kernels dense,local,linear_elu[,linear_favor]] [--max_dense_length 8192]
        [--batch 1] [--heads 4] [--head_dim 32] [--dtype float32] [--radius 128]
        [--num_global 0] [--memory auto|compiled|device] [--out_dir docs/research]

For every kernel and length ``T`` the program ``jit(grad(sum(attention(q, k, v))))`` with
respect to ``q``, ``k`` and ``v`` (layout ``[B, T, H, Dh]``) is compiled, called once to warm
up, then timed ``--repeats`` times (``block_until_ready``); the median is reported. Dense
attention is skipped above ``--max_dense_length``: the default 8192 keeps a CPU run within a
24 GiB machine shared with other work (dense at T=16384 compiles to ~12 GiB and reaches
~18 GiB of host RSS; pass ``--max_dense_length 16384`` on a machine with room for it).

Peak memory comes from one of two sources, named in the output:

* ``compiled``: XLA's memory analysis of the compiled program (arguments + outputs +
  temporaries - aliased bytes). Always available (the only option on CPU); it is XLA's buffer
  assignment, not a measurement (on CPU the process RSS was ~1.4-1.5x larger). On CPU a
  program whose estimate times ``HOST_RSS_FACTOR`` exceeds the free host memory is skipped
  rather than run.
* ``device``: ``device.memory_stats()["peak_bytes_in_use"]`` (GPU). That counter cannot be
  reset, so each (kernel, T) is then measured in a fresh subprocess.

Writes ``attention_scaling.md`` (a table: per kernel time in ms, memory in MiB and speed-up
vs dense) and ``attention_scaling.png`` (log-log time and memory against ``T``) to
``--out_dir``, prints the table, and ends with one JSON line holding the raw numbers and a
``targets`` dict: the speed-ups vs dense at the largest ``T`` where dense ran (target
>= 10x), and the growth ``time(16384) / time(4096)`` of the sub-quadratic kernels (target
<= 4.4, i.e. linear with 10% slack).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mmtx import launch, output_paths
from mmtx.attention import dot_product_attention, linear_attention, local_attention

KERNELS = ("dense", "local", "linear_elu", "linear_favor")
DEFAULT_KERNELS = ("dense", "local", "linear_elu")
DEFAULT_LENGTHS = (512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
MEMORY_SOURCES = ("auto", "compiled", "device")
MD_NAME = "attention_scaling.md"
PNG_NAME = "attention_scaling.png"
MIB = 2**20
MISSING = "—"
SPEEDUP_TARGET = 10.0  # sub-quadratic kernels vs dense, at the largest T dense ran
GROWTH_SLACK = 1.1  # time(T_to) / time(T_from) <= 1.1 * T_to / T_from: linear in T
HOST_RSS_FACTOR = 1.5  # CPU: observed host RSS / compiled estimate (1.36-1.5 for dense)

Attention = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class Measurement:
    """One (kernel, T) result; ``None`` values come with a ``note`` saying why."""

    kernel: str
    length: int
    time_ms: float | None = None
    memory_mib: float | None = None
    note: str = ""


# --- command line -------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _kernel_list(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = sorted(set(names) - set(KERNELS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown kernels {unknown}; choose from {KERNELS}")
    return names


def _join(values: Sequence[object]) -> str:
    return ",".join(str(v) for v in values)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--lengths", type=_int_list, default=list(DEFAULT_LENGTHS), help="comma-separated T")
    add("--kernels", type=_kernel_list, default=list(DEFAULT_KERNELS), help=_join(KERNELS))
    add("--max_dense_length", type=int, default=8192, help="skip dense above this T")
    add("--repeats", type=int, default=3, help="timed calls per point (median reported)")
    add("--batch", type=int, default=1)
    add("--heads", type=int, default=4)
    add("--head_dim", type=int, default=32)
    add("--dtype", choices=sorted(DTYPES), default="float32")
    add("--radius", type=int, default=128, help="local attention radius")
    add("--num_global", type=int, default=0, help="local attention global tokens")
    add("--num_features", type=int, default=None, help="FAVOR+ features (default 4 * Dh)")
    add("--growth_lengths", type=_int_list, default=[4096, 16384], help="T_from,T_to")
    add("--memory", choices=MEMORY_SOURCES, default="auto", help="peak-memory source")
    add("--isolate", action="store_true", help="measure each point in a fresh subprocess")
    add("--seed", type=int, default=0)
    add("--out_dir", type=Path, default=Path("docs/research"))
    add("--overwrite", action="store_true", help="replace the report files if they exist")
    add("--child", default=None, help=argparse.SUPPRESS)  # "KERNEL:T", internal
    args = parser.parse_args(list(argv))
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if len(args.growth_lengths) != 2:
        parser.error("--growth_lengths takes two lengths: T_from,T_to")
    return args


# --- kernels and one measurement -----------------------------------------------------------


def make_attention(kernel: str, args: argparse.Namespace) -> Attention:
    """The attention function of ``kernel`` with the options from ``args``."""
    if kernel == "dense":
        return dot_product_attention
    if kernel == "local":
        return lambda q, k, v: local_attention(
            q, k, v, radius=args.radius, num_global=args.num_global
        )
    if kernel == "linear_elu":
        return lambda q, k, v: linear_attention(q, k, v, feature_map="elu")
    if kernel == "linear_favor":
        rng = jax.random.key(args.seed)
        return lambda q, k, v: linear_attention(
            q, k, v, feature_map="favor", num_features=args.num_features, rng=rng
        )
    raise ValueError(f"unknown kernel {kernel!r}")


def grad_program(attention: Attention) -> Callable[..., Any]:
    """``jit`` of the gradient of ``sum(attention(q, k, v))`` with respect to q, k and v."""

    def loss(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
        return jnp.sum(attention(q, k, v).astype(jnp.float32))

    return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))


def make_inputs(length: int, args: argparse.Namespace) -> tuple[jax.Array, ...]:
    """Standard-normal q, k, v ``[B, T, H, Dh]`` (drawn with NumPy: nothing to compile)."""
    shape = (args.batch, length, args.heads, args.head_dim)
    rng = np.random.default_rng(args.seed)
    return tuple(
        jnp.asarray(rng.standard_normal(shape, np.float32), DTYPES[args.dtype]) for _ in "qkv"
    )


def compiled_bytes(compiled: Any) -> int:
    """Arguments + outputs + temporaries - aliased bytes, from XLA's memory analysis."""
    stats = compiled.memory_analysis()
    return (
        stats.argument_size_in_bytes
        + stats.output_size_in_bytes
        + stats.temp_size_in_bytes
        - stats.alias_size_in_bytes
    )


def device_peak_bytes(device: jax.Device) -> int | None:
    """The device's ``peak_bytes_in_use`` since the process started, if it reports one."""
    stats = device.memory_stats()
    return None if not stats else stats.get("peak_bytes_in_use")


def free_host_bytes() -> int | None:
    """``MemAvailable`` from /proc/meminfo (Linux), else ``None``."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def time_calls(program: Callable[..., Any], inputs: Sequence[jax.Array], repeats: int) -> float:
    """Median wall time in ms of ``repeats`` calls, after one warm-up call."""
    jax.block_until_ready(program(*inputs))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(program(*inputs))
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def measure(kernel: str, length: int, args: argparse.Namespace, source: str) -> Measurement:
    """Compiles, times and sizes the gradient program of one kernel at one length."""
    inputs = make_inputs(length, args)
    compiled = grad_program(make_attention(kernel, args)).lower(*inputs).compile()
    estimate = compiled_bytes(compiled)
    device = jax.devices()[0]
    free = free_host_bytes() if device.platform == "cpu" else None
    if free is not None and estimate * HOST_RSS_FACTOR > free:
        note = f"skipped: needs ~{estimate / MIB:.0f} MiB, {free / MIB:.0f} MiB free"
        return Measurement(kernel, length, memory_mib=estimate / MIB, note=note)
    try:
        time_ms = time_calls(compiled, inputs, args.repeats)
    except jax.errors.JaxRuntimeError as err:  # out of device memory, typically
        return Measurement(kernel, length, note=f"failed: {str(err).splitlines()[0][:120]}")
    peak = device_peak_bytes(device) if source == "device" else estimate
    memory_mib = None if peak is None else peak / MIB
    return Measurement(kernel, length, time_ms=time_ms, memory_mib=memory_mib)


def measure_in_subprocess(
    kernel: str, length: int, argv: Sequence[str], source: str
) -> Measurement:
    """Runs :func:`measure` in a fresh Python process (so device peak counters start at 0)."""
    command = [sys.executable, __file__, *argv, "--memory", source, "--child", f"{kernel}:{length}"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        reason = (done.stderr.strip().splitlines() or ["no output"])[-1][:120]
        return Measurement(kernel, length, note=f"failed (exit {done.returncode}): {reason}")
    return Measurement(**json.loads(lines[-1]))


# --- the sweep -----------------------------------------------------------------------------


def resolve_memory_source(requested: str) -> str:
    if requested != "auto":
        return requested
    return "device" if device_peak_bytes(jax.devices()[0]) is not None else "compiled"


def run_sweep(args: argparse.Namespace, argv: Sequence[str], source: str) -> list[Measurement]:
    isolate = args.isolate or source == "device"
    results = []
    for kernel in args.kernels:
        for length in args.lengths:
            if kernel == "dense" and length > args.max_dense_length:
                note = f"skipped: T > --max_dense_length={args.max_dense_length}"
                results.append(Measurement(kernel, length, note=note))
                continue
            if isolate:
                result = measure_in_subprocess(kernel, length, argv, source)
            else:
                result = measure(kernel, length, args, source)
            print(_progress_line(result), file=sys.stderr, flush=True)
            results.append(result)
    return results


def _progress_line(m: Measurement) -> str:
    time_text = MISSING if m.time_ms is None else f"{m.time_ms:.2f} ms"
    memory_text = MISSING if m.memory_mib is None else f"{m.memory_mib:.1f} MiB"
    return f"{m.kernel:>12} T={m.length:>6}: {time_text:>12} {memory_text:>14} {m.note}"


# --- analysis ------------------------------------------------------------------------------


def _lookup(results: Sequence[Measurement]) -> dict[tuple[str, int], Measurement]:
    return {(m.kernel, m.length): m for m in results}


def speedup(results: Sequence[Measurement], kernel: str, length: int) -> float | None:
    """``time(dense) / time(kernel)`` at ``length``, or ``None`` if either did not run."""
    table = _lookup(results)
    dense, other = table.get(("dense", length)), table.get((kernel, length))
    if dense is None or other is None or dense.time_ms is None or other.time_ms is None:
        return None
    return dense.time_ms / other.time_ms


def _check(value: float | None, ok: Callable[[float], bool]) -> dict[str, Any]:
    return {"value": value, "pass": value is not None and ok(value)}


def growth_lengths(lengths: Sequence[int], wanted: Sequence[int]) -> tuple[int, int]:
    """``wanted`` if both were measured, else (smallest, largest) of ``lengths``."""
    t_from, t_to = wanted
    if t_from in lengths and t_to in lengths:
        return t_from, t_to
    return min(lengths), max(lengths)


def targets(results: Sequence[Measurement], args: argparse.Namespace) -> dict[str, Any]:
    """Speed-ups vs dense at the largest T dense ran, and time growth over ``growth_lengths``."""
    others = [k for k in args.kernels if k != "dense"]
    dense_ran = [m.length for m in results if m.kernel == "dense" and m.time_ms is not None]
    t_ref = max(dense_ran, default=None)
    speedups: dict[str, Any] = {"T": t_ref, "target_min": SPEEDUP_TARGET}
    for kernel in others:
        value = None if t_ref is None else speedup(results, kernel, t_ref)
        speedups[kernel] = _check(value, lambda x: x >= SPEEDUP_TARGET)

    t_from, t_to = growth_lengths(args.lengths, args.growth_lengths)
    limit = GROWTH_SLACK * t_to / t_from
    growth: dict[str, Any] = {"T_from": t_from, "T_to": t_to, "target_max": round(limit, 3)}
    table = _lookup(results)
    for kernel in others:
        lo, hi = table[(kernel, t_from)].time_ms, table[(kernel, t_to)].time_ms
        value = None if lo is None or hi is None else hi / lo
        growth[kernel] = _check(value, lambda x: x <= limit)

    checks = [v for part in (speedups, growth) for v in part.values() if isinstance(v, dict)]
    return {
        "speedup_vs_dense": speedups,
        "growth": growth,
        "all_pass": all(c["pass"] for c in checks),
    }


# --- output --------------------------------------------------------------------------------


def _number(value: float | None, digits: int = 1) -> str:
    return MISSING if value is None else f"{value:,.{digits}f}"


def _time_text(value: float | None) -> str:
    return _number(value, 2 if value is not None and value < 10 else 1)


def markdown_table(results: Sequence[Measurement], args: argparse.Namespace) -> str:
    header = ["T"]
    for kernel in args.kernels:
        header += [f"{kernel} ms", f"{kernel} MiB"]
        if kernel != "dense" and "dense" in args.kernels:
            header.append(f"{kernel} ×")
    rows = [header, ["---:"] * len(header)]
    table = _lookup(results)
    for length in args.lengths:
        row = [str(length)]
        for kernel in args.kernels:
            m = table[(kernel, length)]
            row += [_time_text(m.time_ms), _number(m.memory_mib)]
            if kernel != "dense" and "dense" in args.kernels:
                ratio = speedup(results, kernel, length)
                row.append(MISSING if ratio is None else f"{ratio:.1f}×")
        rows.append(row)
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def memory_description(source: str) -> str:
    if source == "device":
        return (
            '`device.memory_stats()["peak_bytes_in_use"]`, measured in a fresh process per '
            "point (includes the inputs)"
        )
    return (
        "XLA compiled memory analysis of the program (`memory_analysis()`: arguments + "
        "outputs + temporaries − aliased); an estimate from buffer assignment, not a "
        "measured peak"
    )


def _notes(results: Sequence[Measurement]) -> list[str]:
    return [f"- {m.kernel} at T={m.length}: {m.note}" for m in results if m.note]


def _target_lines(summary: dict[str, Any]) -> list[str]:
    speed, growth = summary["speedup_vs_dense"], summary["growth"]
    lines = []
    for name, check in speed.items():
        if isinstance(check, dict):
            lines.append(
                f"- {name} speed-up vs dense at T={speed['T']}: {_number(check['value'])}× "
                f"(target ≥ {SPEEDUP_TARGET:g}×) — {'pass' if check['pass'] else 'FAIL'}"
            )
    for name, check in growth.items():
        if isinstance(check, dict):
            lines.append(
                f"- {name} time({growth['T_to']}) / time({growth['T_from']}): "
                f"{_number(check['value'], 2)} (target ≤ {growth['target_max']:g}) — "
                f"{'pass' if check['pass'] else 'FAIL'}"
            )
    return lines


def markdown_report(
    results: Sequence[Measurement],
    args: argparse.Namespace,
    source: str,
    command: str,
    summary: dict[str, Any],
) -> str:
    device = jax.devices()[0]
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    favor = ""
    if "linear_favor" in args.kernels:
        favor = f"; linear_favor features={args.num_features or 4 * args.head_dim}"
    lines = [
        "# Attention scaling: forward+backward time and peak memory",
        "",
        f"Generated by `benchmarks/attention_scaling.py` on {stamp}.",
        "",
        f"- Command: `{command}`",
        f"- Device: {device.device_kind} (platform `{device.platform}`, "
        f"{jax.device_count()} device(s), {os.cpu_count()} host CPUs); "
        f"jax {jax.__version__}",
        f"- Shape: B={args.batch}, H={args.heads}, Dh={args.head_dim}, {args.dtype}; "
        f"local radius={args.radius}, num_global={args.num_global}{favor}",
        "- Time (ms): median of "
        f"{args.repeats} call(s) of `jit(grad(sum(attention(q, k, v))))` w.r.t. q, k, v, "
        "after one warm-up call (compile excluded), `block_until_ready`.",
        f"- Memory (MiB), source `{source}`: {memory_description(source)}.",
        f"- ×: speed-up vs dense at the same T. {MISSING}: not run "
        f"(dense above --max_dense_length={args.max_dense_length}, or see notes).",
        "",
        markdown_table(results, args),
        "",
        "Targets:",
        "",
        *_target_lines(summary),
    ]
    notes = _notes(results)
    if notes:
        lines += ["", "Notes:", "", *notes]
    lines += ["", f"![time and memory against T]({PNG_NAME})", ""]
    return "\n".join(lines)


def plot(results: Sequence[Measurement], args: argparse.Namespace, source: str, path: Path) -> None:
    """Log-log time and memory against T, one line per kernel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(11, 4.5))
    for kernel in args.kernels:
        points = [m for m in results if m.kernel == kernel]
        timed = [(m.length, m.time_ms) for m in points if m.time_ms is not None]
        sized = [(m.length, m.memory_mib) for m in points if m.memory_mib is not None]
        if timed:
            ax_time.plot(*zip(*timed, strict=True), marker="o", label=kernel)
        if sized:
            ax_mem.plot(*zip(*sized, strict=True), marker="o", label=kernel)
    ax_time.set(ylabel="forward+backward time (ms)", title="time")
    ax_mem.set(ylabel=f"peak memory (MiB, {source})", title="memory")
    for ax in (ax_time, ax_mem):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length T")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(
        f"B={args.batch} H={args.heads} Dh={args.head_dim} {args.dtype} on "
        f"{jax.devices()[0].device_kind}"
    )
    fig.tight_layout()
    with output_paths.atomic_output(path) as temporary:
        fig.savefig(temporary, dpi=120, format="png")
    plt.close(fig)


def raw_numbers(results: Sequence[Measurement], args: argparse.Namespace) -> dict[str, Any]:
    by_kernel: dict[str, Any] = {}
    for kernel in args.kernels:
        points = [m for m in results if m.kernel == kernel]
        by_kernel[kernel] = {
            "T": [m.length for m in points],
            "time_ms": [m.time_ms for m in points],
            "memory_mib": [m.memory_mib for m in points],
            "speedup_vs_dense": [speedup(results, kernel, m.length) for m in points],
        }
    return by_kernel


def command_line(argv: Sequence[str]) -> str:
    """How this run was started, with paths relative to the working directory when inside it."""

    def short(path: str) -> str:
        relative = os.path.relpath(path)
        return path if relative.startswith("..") else relative

    return shlex.join([short(sys.executable), short(__file__), *argv])


# --- entry point ---------------------------------------------------------------------------


def _run_child(args: argparse.Namespace) -> None:
    kernel, length = args.child.split(":")
    result = measure(kernel, int(length), args, args.memory)
    print(json.dumps(dataclasses.asdict(result)))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the sweep, writes the report and plot; returns what the final JSON line prints."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # A GPU parent must not grab most of the memory before its measuring subprocesses start.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    args = parse_args(argv)
    if args.child:
        _run_child(args)
        return {}

    output_paths.check_report_paths(
        [args.out_dir / MD_NAME, args.out_dir / PNG_NAME], overwrite=args.overwrite
    )
    source = resolve_memory_source(args.memory)
    results = run_sweep(args, argv, source)
    summary = targets(results, args)
    command = command_line(argv)

    report = markdown_report(results, args, source, command, summary)
    output_paths.write_text(args.out_dir / MD_NAME, report)
    plot(results, args, source, args.out_dir / PNG_NAME)

    device = jax.devices()[0]
    payload = {
        "command": command,
        "device": {"kind": device.device_kind, "platform": device.platform},
        "jax": jax.__version__,
        "memory_source": source,
        "host_malloc": launch.current_setting(),
        "config": {
            key: getattr(args, key)
            for key in ("batch", "heads", "head_dim", "dtype", "radius", "num_global", "repeats")
        },
        "results": raw_numbers(results, args),
        "targets": summary,
    }
    print(markdown_table(results, args))
    print(json.dumps(payload))
    return payload


if __name__ == "__main__":
    launch.restart_with_tuned_malloc()
    main()
