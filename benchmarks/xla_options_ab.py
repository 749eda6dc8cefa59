"""XLA compile options against the default, as A/B runs of one train step in one process.

Usage, from the repository root::

    .venv/bin/python benchmarks/xla_options_ab.py \\
        --variant 'xla_cpu_enable_concurrency_optimized_scheduler=false' \\
        --variant 'xla_cpu_prefer_vector_width=512' [--rounds 5] [--steps 3] [--warmup 2]
        [--config configs/bench_clip.py] [--config.<field>=<value> ...]

The step is built once (``train_step.build_step``: ``mmtx.train.build.build``, as the train
loop builds it) and compiled once per variant: ``A`` with :data:`train_step.DEFAULT_XLA_OPTIONS`
and each ``--variant 'name=value;...'`` on top of them. Each compiled step gets its own copy
of the state (the step donates it) and the same batch. After ``--warmup`` untimed steps of
each, ``--rounds`` rounds time ``--steps`` steps of every variant in turn, A first, so that a
change of load on a shared machine hits every variant alike. A variant's ratio in a round is
A's median step time over its own in that round (> 1: the variant is faster); the summary is
the median of the rounds and their range.

Prints a table and ends with one JSON line: ``config``, ``jax``, ``variants`` (per variant:
``options``, ``step_ms`` median over rounds, ``ratio`` median, ``ratio_range``,
``round_ms``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from mmtx import launch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # train_step.py, beside this file
import train_step


def run_ab(
    setup: train_step.StepSetup,
    variants: Sequence[dict[str, Any]],
    *,
    rounds: int,
    steps: int,
    warmup: int,
) -> list[dict[str, Any]]:
    """Times the default options (index 0) and each of ``variants`` alternately.

    Returns one dict per variant, the default first: ``options``, ``compile_s``,
    ``round_ms`` (median step ms per round), ``step_ms`` (median of ``round_ms``), and for the
    others ``ratios`` (default ms / variant ms per round), ``ratio`` and ``ratio_range``.
    """
    options = [dict(train_step.DEFAULT_XLA_OPTIONS)]
    options += [{**train_step.DEFAULT_XLA_OPTIONS, **variant} for variant in variants]
    timers, results = [], []
    for opts in options:
        compiled, compile_s = train_step.compile_step(setup, opts)
        timer = train_step.StepTimer(setup, compiled)
        timer.state = jax.tree.map(jnp.copy, setup.state)  # each step donates its own state
        timers.append(timer)
        results.append({"options": opts, "compile_s": round(compile_s, 2), "round_ms": []})
    for timer in timers:
        timer.run(warmup)
    for _ in range(rounds):
        for timer, result in zip(timers, results, strict=True):
            result["round_ms"].append(round(1e3 * statistics.median(timer.run(steps)), 2))
    base = results[0]["round_ms"]
    for result in results:
        result["step_ms"] = round(statistics.median(result["round_ms"]), 2)
    for result in results[1:]:
        ratios = [a / b for a, b in zip(base, result["round_ms"], strict=True)]
        result["ratios"] = [round(r, 4) for r in ratios]
        result["ratio"] = round(statistics.median(ratios), 4)
        result["ratio_range"] = [round(min(ratios), 4), round(max(ratios), 4)]
    return results


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, dict[str, str]]:
    """Returns (args, config overrides); ``--config.a.b=v`` arguments are the overrides."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--config", default=train_step.DEFAULT_CONFIG, help="configs/x.py[:arg]")
    add("--batch_size", type=int, default=None, help="default: the config's train.batch_size")
    add("--variant", type=train_step._options, action="append", default=[], required=True)
    add("--rounds", type=int, default=5)
    add("--steps", type=int, default=3, help="timed steps per variant per round (median)")
    add("--warmup", type=int, default=2)
    overrides, rest = train_step.split_config_overrides(argv)
    args = parser.parse_args(rest)
    if args.rounds < 1 or args.steps < 1 or args.warmup < 0:
        parser.error("--rounds and --steps must be >= 1, --warmup >= 0")
    return args, overrides


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    config = train_step.load_config(args.config, overrides, args.batch_size, None)
    setup = train_step.build_step(config)
    results = run_ab(setup, args.variant, rounds=args.rounds, steps=args.steps, warmup=args.warmup)
    print(f"{'options':<72} {'ms':>9} {'A/variant':>10} {'range':>14}")
    for result in results:
        name = ";".join(f"{k}={v}" for k, v in result["options"].items()) or "(default)"
        ratio = f"{result['ratio']:.3f}" if "ratio" in result else "A"
        spread = "-".join(f"{r:.3f}" for r in result.get("ratio_range", ())) or ""
        print(f"{name:<72} {result['step_ms']:9.1f} {ratio:>10} {spread:>14}")
    payload = {"config": train_step.describe(config), "jax": jax.__version__, "variants": results}
    print(json.dumps(payload))
    return payload


if __name__ == "__main__":
    launch.restart_with_tuned_malloc()
    main()
