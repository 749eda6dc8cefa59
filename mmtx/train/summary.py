"""``workdir/summary.json``: a run's model, devices, speed and final evaluation."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import ml_collections

from mmtx.train import workdir as workdir_lib
from mmtx.train.flops import throughput
from mmtx.train.startup import ModelFacts

SUMMARY = "summary.json"

# Kept from the previous summary by a run that trained nothing (an evaluation, a rerun).
TRAINING_FIGURES = (
    "steps_per_second",
    "final_train_loss",
    "compile_seconds",
    "flops_per_step",
    "peak_flops_per_device",
    "tflops_per_device",
    "mfu",
)


@dataclasses.dataclass(frozen=True)
class CompileFigures:
    """The train step's compile: its time (None: not compiled, nothing trained), the step's
    analytic FLOPs on all devices and the peak FLOP/s per device (0: not computed)."""

    seconds: float | None = None
    flops_per_step: float = 0.0
    peak_flops: float = 0.0


@dataclasses.dataclass(frozen=True)
class TrainFigures:
    """What this run's train steps did.

    Attributes:
      first_step: the step the run started at.
      step: the step it ended at.
      train_seconds: from the start of the steps (the compile included) to the final
        checkpoint's commit.
      compiled: the train step's :class:`CompileFigures`.
      last_loss: the newest fetched step's loss.
      nonfinite_steps: the steps with a non-finite loss, gradient or update.
      preempted: whether a stop request ended the run early.
    """

    first_step: int
    step: int
    train_seconds: float
    compiled: CompileFigures = dataclasses.field(default_factory=CompileFigures)
    last_loss: float | None = None
    nonfinite_steps: tuple[int, ...] = ()
    preempted: bool = False


def summarize(
    config: ml_collections.ConfigDict,
    facts: ModelFacts,
    figures: TrainFigures,
    eval_metrics: dict[str, float],
    wall_seconds: float,
    skipped: dict[str, int] | None = None,
) -> dict[str, Any]:
    """The summary's JSON dict: the model's facts, this run's figures (rounded; steps per
    second, TFLOP/s per device and MFU over this run's steps, the compile excluded), the
    evaluation (rounded to 4 places) and a file source's ``skipped`` examples by reason."""
    steps = figures.step - figures.first_step
    elapsed, compiled = figures.train_seconds, figures.compiled
    compile_seconds = compiled.seconds
    summary: dict[str, Any] = {
        "step": figures.step,
        "num_params": facts.num_params,
        "num_trainable_params": facts.num_trainable,
        "dtype": facts.compute_dtype,
        "param_dtype": config.param_dtype,
        "device_kind": facts.device_kind,
        "device_count": jax.device_count(),
        "compile_seconds": round(compile_seconds, 2) if compile_seconds is not None else None,
        "train_seconds_this_run": round(elapsed, 2),
        "wall_seconds_this_run": round(wall_seconds, 2),
        "steps_this_run": steps,
        "steps_per_second": round(steps / elapsed, 3) if steps > 0 else None,
        "final_train_loss": figures.last_loss,
        # Analytic model FLOPs (mmtx.train.flops) at steps_per_second, per device, and MFU.
        "flops_per_step": compiled.flops_per_step or None,
        "peak_flops_per_device": compiled.peak_flops or None,
        "tflops_per_device": None,
        "mfu": None,
        "eval": {k: round(float(v), 4) for k, v in eval_metrics.items()},
        "nonfinite_steps": list(figures.nonfinite_steps),
        "preempted": figures.preempted,
    }
    if skipped is not None:  # bad examples skipped, by reason, over the whole run
        summary["skipped"] = skipped
    if steps > 0 and compiled.flops_per_step:
        # Over this run's steps, the compile excluded (evals and checkpoints included).
        rate = steps / max(elapsed - (compile_seconds or 0.0), 1e-9)
        perf = throughput(rate, compiled.flops_per_step, jax.device_count(), compiled.peak_flops)
        summary["tflops_per_device"] = round(perf["tflops_per_device"], 6)
        summary["mfu"] = round(perf["mfu"], 5) if compiled.peak_flops else None
    return summary


def write_summary(workdir: str, summary: dict[str, Any]) -> str:
    """Writes ``summary`` to ``workdir/summary.json`` (first process, atomically) and
    returns the path. A run that trained nothing (``steps_this_run`` 0) keeps the training
    figures (:data:`TRAINING_FIGURES`) of the summary there, the run that did."""
    path = os.path.join(workdir, SUMMARY)
    if summary["steps_this_run"] == 0 and os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
        for key in TRAINING_FIGURES:
            if summary[key] is None and previous.get(key) is not None:
                summary[key] = previous[key]
    if jax.process_index() == 0:
        workdir_lib.write_json_atomically(path, summary)
    return path
