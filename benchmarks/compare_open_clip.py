"""mmtx against open_clip on the reference workload, in one go: examples/s of each and the ratio.

Usage, from the repository root (make the peer's environment once with
``benchmarks/peers/setup_open_clip.sh``)::

    .venv/bin/python benchmarks/compare_open_clip.py [--rounds 3] [--steps 10] [--warmup 3]
        [--bf16] [--config configs/bench_clip.py] [--config.<field>=<value> ...]

Each round runs ``benchmarks/train_step.py`` (mmtx, this environment) and
``benchmarks/peers/open_clip_step.py`` (open_clip, in ``benchmarks/peers/.venv-open-clip``)
one after the other, each in a fresh subprocess, alternating which goes first, so that the
load of a shared machine hits both alike. Both report the median of ``--steps`` timed steps
after ``--warmup`` untimed ones at batch 64, float32. Each round gives a ratio (mmtx ex/s /
open_clip ex/s, from runs seconds apart); the summary is the median over rounds of each
library's ex/s and of the per-round ratios. Ends with one JSON line: ``mmtx_examples_per_sec``,
``open_clip_examples_per_sec``, ``ratio``, ``ratios``, ``mmtx_mfu``, ``peak_gflops`` and the
per-round results.
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
PEER_SCRIPT = ROOT / "benchmarks" / "peers" / "open_clip_step.py"
PEER_PYTHON = ROOT / "benchmarks" / "peers" / ".venv-open-clip" / "bin" / "python"
SETUP_SCRIPT = ROOT / "benchmarks" / "peers" / "setup_open_clip.sh"


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


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--config", default="configs/bench_clip.py")
    add("--rounds", type=int, default=3, help="interleaved (mmtx, open_clip) pairs")
    add("--steps", type=int, default=10)
    add("--warmup", type=int, default=3)
    add("--batch_size", type=int, default=64)
    add("--bf16", action="store_true", help="open_clip under bfloat16 autocast")
    add("--peer_python", type=Path, default=PEER_PYTHON)
    overrides = [a for a in argv if a.startswith("--config.")]
    args = parser.parse_args([a for a in argv if not a.startswith("--config.")])
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    return args, overrides


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    if not args.peer_python.exists():
        raise SystemExit(f"{args.peer_python} not found: run {SETUP_SCRIPT} first")
    rounds = []
    for index in range(args.rounds):
        order = ("mmtx", "open_clip") if index % 2 == 0 else ("open_clip", "mmtx")
        results = {}
        for name in order:
            command = mmtx_command(args, overrides) if name == "mmtx" else peer_command(args)
            results[name] = run_json(command)
        ratio = results["mmtx"]["examples_per_sec"] / results["open_clip"]["examples_per_sec"]
        rounds.append({**results, "ratio": round(ratio, 4), "order": list(order)})
        print(
            f"round {index + 1}: mmtx {results['mmtx']['examples_per_sec']:.1f} ex/s "
            f"(MFU {results['mmtx']['mfu']:.1%}), open_clip "
            f"{results['open_clip']['examples_per_sec']:.1f} ex/s, ratio {ratio:.2f}",
            flush=True,
        )
    mmtx = statistics.median(r["mmtx"]["examples_per_sec"] for r in rounds)
    peer = statistics.median(r["open_clip"]["examples_per_sec"] for r in rounds)
    summary = {
        "mmtx_examples_per_sec": round(mmtx, 3),
        "open_clip_examples_per_sec": round(peer, 3),
        "ratio": round(statistics.median(r["ratio"] for r in rounds), 4),
        "ratios": [r["ratio"] for r in rounds],
        "mmtx_mfu": round(statistics.median(r["mmtx"]["mfu"] for r in rounds), 4),
        "peak_gflops": round(statistics.median(r["mmtx"]["peak_gflops"] for r in rounds), 2),
        "open_clip_dtype": rounds[0]["open_clip"]["dtype"],
        "rounds": rounds,
    }
    print(
        f"mmtx {mmtx:.1f} ex/s, open_clip {peer:.1f} ex/s: ratio {summary['ratio']:.2f} "
        f"(median of {args.rounds} interleaved rounds: {summary['ratios']}); mmtx MFU "
        f"{summary['mmtx_mfu']:.1%} of {summary['peak_gflops']:.1f} GFLOP/s"
    )
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    launch.restart_with_tuned_malloc()
    main()
