"""mmtx against open_clip on the reference workload, in one go: examples/s, GFLOP/s and MFU of
each, and the ratio.

Usage, from the repository root (make the peer's environment once with
``benchmarks/peers/setup_peers.sh``)::

    .venv/bin/python benchmarks/compare_open_clip.py [--rounds 3] [--steps 10] [--warmup 3]
        [--bf16] [--config configs/bench_clip.py] [--config.<field>=<value> ...]

Each round runs ``benchmarks/train_step.py`` (mmtx, this environment) and
``benchmarks/peers/open_clip_step.py`` (open_clip, in ``benchmarks/peers/.venv-peers``, or
the older ``benchmarks/peers/.venv-open-clip`` when only that one exists) one after the other,
each in a fresh subprocess, alternating which goes first, so that the load of a shared machine
hits both alike. Both report the median of ``--steps`` timed steps after ``--warmup`` untimed
ones at batch 64, float32. Each round gives a ratio (mmtx ex/s / open_clip ex/s, from runs
seconds apart); the summary is the median over rounds of each library's ex/s and GFLOP/s and
of the per-round ratios.

MFU: both libraries train the same model, so both are given the same FLOPs per step, the
count mmtx's ``train_step.py`` reports for the workload (``flops_analytic``; ``flops_xla``
when a layer type has no analytic count), over each one's own step time. The peak is the best
large float32 matmul any library achieved on this machine during the run: the highest of
XLA's 2048^3 rates (``train_step.py`` measures one before and one after its steps) and
torch's (``open_clip_step.py``, after its steps), over every round. One peak for the whole
run, for every round and the summary: a matmul measured low (load, frequency) does not raise
one library's or one round's MFU. Which library and round set the peak is reported.

The CPU the figures come from (``lscpu``: model name, model number, logical CPUs, and whether
it has AVX-512F, AVX-512 BF16 and AMX) is printed first and kept in the JSON. Ends with one
JSON line: ``cpu``, ``mmtx_examples_per_sec``, ``open_clip_examples_per_sec``, ``ratio``,
``ratios``, ``flops_per_step``, ``mmtx_gflops``, ``open_clip_gflops``, ``xla_matmul_gflops``,
``torch_matmul_gflops``, ``peak_gflops``, ``peak_source``, ``peak_round``, ``mmtx_mfu``,
``open_clip_mfu`` and the per-round results.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmtx import launch

ROOT = Path(__file__).resolve().parents[1]
MMTX_SCRIPT = ROOT / "benchmarks" / "train_step.py"
PEERS = ROOT / "benchmarks" / "peers"
PEER_SCRIPT = PEERS / "open_clip_step.py"
# The peer environments that have open_clip, preferred first: setup_peers.sh's (torch,
# open_clip, transformers, timm) and the older open_clip-only one of setup_open_clip.sh.
PEER_PYTHONS = (
    PEERS / ".venv-peers" / "bin" / "python",
    PEERS / ".venv-open-clip" / "bin" / "python",
)
SETUP_SCRIPT = PEERS / "setup_peers.sh"
# CPU flags reported (present or not): AVX-512 foundation, AVX-512 bfloat16 dot products and
# the AMX tile unit with its bfloat16 multiply.
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def default_peer_python(candidates: Sequence[Path] = PEER_PYTHONS) -> Path:
    """The first of ``candidates`` that exists (the first one when none does)."""
    for path in candidates:
        if path.exists():
            return path
    return candidates[0]


# --- the CPU --------------------------------------------------------------------------------


def parse_cpu_info(text: str) -> dict[str, Any]:
    """The CPU model from ``lscpu`` output or the text of ``/proc/cpuinfo``.

    Returns ``model_name`` (``Model name`` / ``model name``), ``model`` (the ``Model:``
    number), ``cpus`` (``CPU(s)``, or the number of ``processor`` entries of /proc/cpuinfo)
    and ``flags``: each of :data:`CPU_FLAGS` -> present. A field the text lacks is None.
    """
    fields: dict[str, str] = {}
    processors = 0
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().lower()
        if key == "processor":
            processors += 1
        fields.setdefault(key, value.strip())  # /proc/cpuinfo repeats them per processor
    model = fields.get("model")
    cpus = fields.get("cpu(s)")
    flags = set(fields.get("flags", "").split())
    return {
        "model_name": fields.get("model name") or None,
        "model": int(model) if model and model.isdigit() else None,
        "cpus": int(cpus) if cpus and cpus.isdigit() else (processors or None),
        "flags": {flag: flag in flags for flag in CPU_FLAGS} if flags else None,
    }


def read_cpu_text() -> str:
    """``lscpu``'s output (C locale), or /proc/cpuinfo where lscpu is missing or fails."""
    try:
        done = subprocess.run(
            ["lscpu"],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "LC_ALL": "C"},
        )
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout
    except OSError:
        pass
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def describe_cpu(cpu: dict[str, Any]) -> str:
    """One line: ``Intel(R) Xeon(R) Processor (model 143), 2 CPUs, avx512f yes, ...``."""
    flags = cpu["flags"] or {}
    marks = ", ".join(f"{name} {'yes' if on else 'no'}" for name, on in flags.items())
    line = f"{cpu['model_name'] or 'unknown CPU'} (model {cpu['model']}), {cpu['cpus']} CPUs"
    return f"{line}, {marks}" if marks else line


# --- the runs -------------------------------------------------------------------------------


def last_json_line(output: str) -> dict[str, Any]:
    """The last line of ``output`` that parses as a JSON object."""
    for line in reversed(output.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise ValueError(f"no JSON line in the output:\n{output[-2000:]}")


def run_json(command: list[str]) -> dict[str, Any]:
    """Runs ``command`` from the repository root; returns its last JSON line."""
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(
            f"{' '.join(command)} exited {done.returncode}:\n{done.stdout[-2000:]}"
            f"\n{done.stderr[-4000:]}"
        )
    return last_json_line(done.stdout)


def mmtx_command(args: argparse.Namespace, overrides: list[str]) -> list[str]:
    return [
        sys.executable,
        str(MMTX_SCRIPT),
        f"--config={args.config}",
        f"--steps={args.steps}",
        f"--warmup={args.warmup}",
        f"--batch_size={args.batch_size}",
        "--no_unrolled_count",
        *overrides,
    ]


def peer_command(args: argparse.Namespace) -> list[str]:
    command = [
        str(args.peer_python),
        str(PEER_SCRIPT),
        f"--steps={args.steps}",
        f"--warmup={args.warmup}",
        f"--batch_size={args.batch_size}",
        f"--threads={os.cpu_count()}",
    ]
    return [*command, "--bf16"] if args.bf16 else command


# --- FLOPs and the peak ---------------------------------------------------------------------


def step_flops(mmtx: dict[str, Any]) -> tuple[float, str]:
    """The FLOPs of one step of the workload and their source, from a train_step.py result:
    the count its own MFU uses (``flops_analytic``, else ``flops_xla``; that one counts a
    scanned layer stack once, since this script passes ``--no_unrolled_count``)."""
    if mmtx.get("flops_analytic") is not None:
        return float(mmtx["flops_analytic"]), "analytic"
    return float(mmtx["flops_xla"]), "xla"


def xla_matmul_gflops(mmtx: dict[str, Any]) -> float:
    """The best of train_step.py's XLA matmul rates (``peak_gflops_runs``; ``peak_gflops``,
    their mean, from a train_step.py that reports only that)."""
    return max(mmtx.get("peak_gflops_runs") or [mmtx["peak_gflops"]])


def round_figures(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One round's FLOPs per step, each library's GFLOP/s and both matmul rates."""
    mmtx, peer = results["mmtx"], results["open_clip"]
    if mmtx["batch_size"] != peer["batch_size"]:
        raise ValueError(f"batch sizes differ: mmtx {mmtx['batch_size']}, {peer['batch_size']}")
    flops, source = step_flops(mmtx)
    return {
        "flops_per_step": flops,
        "flops_source": source,
        "mmtx_gflops": round(flops / (mmtx["step_ms"] / 1e3) / 1e9, 2),
        "open_clip_gflops": round(flops / (peer["step_ms"] / 1e3) / 1e9, 2),
        "xla_matmul_gflops": round(xla_matmul_gflops(mmtx), 2),
        "torch_matmul_gflops": round(float(peer["torch_matmul_gflops"]), 2),
    }


def best_peak(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The highest matmul rate of any library in any round: ``peak_gflops``, ``peak_source``
    (``xla`` or ``torch``; XLA on a tie) and ``peak_round`` (1-based)."""
    candidates = [
        (r[f"{source}_matmul_gflops"], source, index + 1)
        for index, r in enumerate(rounds)
        for source in ("xla", "torch")
    ]
    peak, source, index = max(candidates, key=lambda c: c[0])  # max keeps the first of ties
    return {"peak_gflops": peak, "peak_source": source, "peak_round": index}


# --- main -----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--config", default="configs/bench_clip.py")
    add("--rounds", type=int, default=3, help="interleaved (mmtx, open_clip) pairs")
    add("--steps", type=int, default=10)
    add("--warmup", type=int, default=3)
    add("--batch_size", type=int, default=64)
    add("--bf16", action="store_true", help="open_clip under bfloat16 autocast")
    add("--peer_python", type=Path, default=None, help="default: .venv-peers, .venv-open-clip")
    overrides = [a for a in argv if a.startswith("--config.")]
    args = parser.parse_args([a for a in argv if not a.startswith("--config.")])
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    if args.peer_python is None:
        args.peer_python = default_peer_python()
    return args, overrides


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    if not args.peer_python.exists():
        raise SystemExit(f"{args.peer_python} not found: run {SETUP_SCRIPT} first")
    cpu = parse_cpu_info(read_cpu_text())
    print(f"CPU: {describe_cpu(cpu)}", flush=True)
    rounds = []
    for index in range(args.rounds):
        order = ("mmtx", "open_clip") if index % 2 == 0 else ("open_clip", "mmtx")
        results = {}
        for name in order:
            command = mmtx_command(args, overrides) if name == "mmtx" else peer_command(args)
            results[name] = run_json(command)
        ratio = results["mmtx"]["examples_per_sec"] / results["open_clip"]["examples_per_sec"]
        figures = round_figures(results)
        rounds.append({**results, **figures, "ratio": round(ratio, 4), "order": list(order)})
        print(
            f"round {index + 1}: mmtx {results['mmtx']['examples_per_sec']:.1f} ex/s "
            f"({figures['mmtx_gflops']:.1f} GFLOP/s), open_clip "
            f"{results['open_clip']['examples_per_sec']:.1f} ex/s "
            f"({figures['open_clip_gflops']:.1f} GFLOP/s), ratio {ratio:.2f}; matmul XLA "
            f"{figures['xla_matmul_gflops']:.1f}, torch {figures['torch_matmul_gflops']:.1f} "
            "GFLOP/s",
            flush=True,
        )
    peak = best_peak(rounds)
    for index, r in enumerate(rounds):
        r["mmtx_mfu"] = round(r["mmtx_gflops"] / peak["peak_gflops"], 4)
        r["open_clip_mfu"] = round(r["open_clip_gflops"] / peak["peak_gflops"], 4)
        print(
            f"round {index + 1}: MFU mmtx {r['mmtx_mfu']:.1%}, open_clip "
            f"{r['open_clip_mfu']:.1%} (of the run's peak, {peak['peak_gflops']:.1f} GFLOP/s)"
        )
    mmtx = statistics.median(r["mmtx"]["examples_per_sec"] for r in rounds)
    peer = statistics.median(r["open_clip"]["examples_per_sec"] for r in rounds)
    mmtx_gflops = statistics.median(r["mmtx_gflops"] for r in rounds)
    peer_gflops = statistics.median(r["open_clip_gflops"] for r in rounds)
    summary = {
        "cpu": cpu,
        "mmtx_examples_per_sec": round(mmtx, 3),
        "open_clip_examples_per_sec": round(peer, 3),
        "ratio": round(statistics.median(r["ratio"] for r in rounds), 4),
        "ratios": [r["ratio"] for r in rounds],
        "flops_per_step": rounds[0]["flops_per_step"],
        "flops_source": rounds[0]["flops_source"],
        "mmtx_gflops": round(mmtx_gflops, 2),
        "open_clip_gflops": round(peer_gflops, 2),
        "xla_matmul_gflops": max(r["xla_matmul_gflops"] for r in rounds),
        "torch_matmul_gflops": max(r["torch_matmul_gflops"] for r in rounds),
        **peak,
        "mmtx_mfu": round(mmtx_gflops / peak["peak_gflops"], 4),
        "open_clip_mfu": round(peer_gflops / peak["peak_gflops"], 4),
        "open_clip_dtype": rounds[0]["open_clip"]["dtype"],
        "rounds": rounds,
    }
    print(
        f"mmtx {mmtx:.1f} ex/s, open_clip {peer:.1f} ex/s: ratio {summary['ratio']:.2f} "
        f"(median of {args.rounds} interleaved rounds: {summary['ratios']}); MFU mmtx "
        f"{summary['mmtx_mfu']:.1%} ({mmtx_gflops:.1f} GFLOP/s), open_clip "
        f"{summary['open_clip_mfu']:.1%} ({peer_gflops:.1f} GFLOP/s) of a "
        f"{peak['peak_gflops']:.1f} GFLOP/s peak ({peak['peak_source']} matmul, round "
        f"{peak['peak_round']}; best XLA {summary['xla_matmul_gflops']:.1f}, best torch "
        f"{summary['torch_matmul_gflops']:.1f}); CPU: {describe_cpu(cpu)}"
    )
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    launch.restart_with_tuned_malloc()
    main()
