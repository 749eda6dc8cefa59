"""The "Plan a run on TPU or GPU" table of docs/usage.md, from ahead-of-time compiles.

For each config and topology it compiles the real train step (:func:`mmtx.compile.compile_run`,
no eval step) with the params fully sharded (``mesh.data=1, mesh.fsdp=-1``) at two per-chip
batches, and reports per chip: the state, the compiled total at each batch, the largest batch
that fits the chip's HBM by a straight line through the two totals (XLA's temporaries grow
linearly with the batch; the estimate is rounded down to a multiple of the smaller batch and
labelled as an estimate), and the step time that batch's FLOPs imply at the chip's bf16 peak
(100% MFU: a lower bound; the FLOPs are :func:`mmtx.compile.step_flops`: the larger of XLA's
count and the analytic one).

    .venv/bin/python benchmarks/aot_plan.py                       # the docs table (TPU rows)
    .venv/bin/python benchmarks/aot_plan.py --topologies h100:8   # with 'mmtx[aot-gpu]'

Every number comes from the compiler on this host; nothing runs. One compile of ``large`` takes
2-4 minutes on a 2-core host.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import jax

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from mmtx import compile as compile_lib  # noqa: E402
from mmtx import config as config_lib  # noqa: E402

CONFIGS = ("configs/base.py:base", "configs/base.py:large")
TOPOLOGIES = ("v5e:2x4", "v5e:16x16", "v5p:4x4x4", "h100:8")
GIB = 2**30


def plan_config(spec: str, devices: list[Any], per_chip: int) -> Any:
    """``spec`` fully sharded over ``devices`` with ``per_chip`` train examples per device."""
    platform = devices[0].platform
    config = config_lib.load_config(spec)
    config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 1, -1, 1
    config.train.batch_size = per_chip * len(devices)
    config.eval.batch_size = per_chip * len(devices)
    if platform == "gpu":
        config.attention.implementation = "xla"  # no cuDNN on this host (see mmtx.compile)
    # What the devices can run is checked when build() makes the model for their platform.
    return config_lib.validate(config)


def fitting_batch(totals: dict[int, int], hbm: int) -> int:
    """The largest per-chip batch under ``hbm`` on the line through the two ``{batch:
    bytes}`` points, rounded down to a multiple of the smaller batch (0: not even that)."""
    (b1, t1), (b2, t2) = sorted(totals.items())
    slope = (t2 - t1) / (b2 - b1)
    if slope <= 0:
        return b2
    estimate = b1 + (hbm - t1) / slope
    return max(0, int(estimate // b1) * b1)


def plan_row(
    spec: str, topology: str, batches: tuple[int, int], compile_run: Any = None
) -> dict[str, Any]:
    """One table row: ``spec`` on ``topology``, compiled at the per-chip ``batches``."""
    compile_run = compile_run or compile_lib.compile_run
    devices = compile_lib.topology_devices(topology)
    hbm = compile_lib.hbm_per_device(devices[0])
    peak = compile_lib.peak_per_device(devices[0])
    totals, flops, seconds, state = {}, {}, 0.0, None
    for per_chip in batches:
        config = plan_config(spec, devices, per_chip)
        start = time.perf_counter()
        try:
            run, reports = compile_run(config, devices, eval_step=False)
        except compile_lib.DoesNotFit:
            totals[per_chip] = None
            continue
        seconds += time.perf_counter() - start
        report = reports[0]
        totals[per_chip] = report.memory["total"]
        flops[per_chip], _ = compile_lib.step_flops(report, config, len(devices))
        if state is None:
            layouts = report.layouts[0] if report.layouts else None
            shares = compile_lib.state_bytes(run.abstract_state, run.state_shardings, layouts)
            whole = compile_lib.state_total(shares)
            state = {
                "per_device": whole.per_device,
                "tiled": whole.tiled,
                "ideal": whole.total / len(devices),
            }
    fitted = {b: t for b, t in totals.items() if t is not None}
    best = fitting_batch(fitted, hbm) if len(fitted) == 2 else None
    step_ms = None
    if best:
        (b1, f1), (b2, f2) = sorted(flops.items())
        per_example = (f2 - f1) / (b2 - b1)
        step_ms = (f1 + (best - b1) * per_example) / peak * 1e3
    return {
        "config": spec.rpartition(":")[2],
        "topology": topology,
        "devices": len(devices),
        "device_kind": devices[0].device_kind,
        "hbm": hbm,
        "mesh": dict(run.mesh.shape) if state is not None else None,
        "state": state,
        "totals": totals,
        "fitting_batch": best,
        "step_ms_at_peak": step_ms,
        "compile_seconds": round(seconds, 1),
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as the docs' table."""
    lines = [
        "| config | topology | state per chip (x ideal; in TPU tiles) | compiled total per chip "
        "at the batches tried | largest batch per chip (estimate) | step at peak |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        state = row["state"]
        state_text = (
            f"{state['per_device'] / 2**20:.0f} MiB ({state['per_device'] / state['ideal']:.2f}x;"
            f" {state['tiled'] / state['ideal']:.2f}x)"
            if state
            else "—"
        )
        totals = ", ".join(
            f"{b}: {t / GIB:.2f} GiB" if t is not None else f"{b}: does not fit"
            for b, t in sorted(row["totals"].items())
        )
        best = row["fitting_batch"]
        step = f"{row['step_ms_at_peak']:.0f} ms" if row["step_ms_at_peak"] else "—"
        lines.append(
            f"| {row['config']} | {row['topology']} ({row['devices']} x {row['device_kind']}, "
            f"{row['hbm'] / GIB:.1f} GiB) | {state_text} | {totals} | "
            f"{best if best is not None else '—'} | {step} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Compiles the table's rows and prints it, then one JSON line of the raw figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--topologies", default=",".join(TOPOLOGIES))
    parser.add_argument("--batches", default="8,16", help="two per-chip batches")
    args = parser.parse_args(argv)
    batches = tuple(int(b) for b in args.batches.split(","))
    if len(batches) != 2 or not 0 < batches[0] < batches[1]:
        parser.error("--batches takes two increasing per-chip batches, e.g. 8,16")
    jax.config.update("jax_platforms", "cpu")
    rows = []
    for topology in args.topologies.split(","):
        for spec in args.configs.split(","):
            row = plan_row(spec, topology, batches)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    print(markdown(rows))
    print(json.dumps({"jax": jax.__version__, "batches": batches, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
