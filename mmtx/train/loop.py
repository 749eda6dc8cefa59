"""``train_and_evaluate(config, workdir)``: the whole training program, top to bottom.

Stages: config -> workdir claimed -> run built and restored (:mod:`mmtx.train.startup`) ->
train step compiled -> loop (step, log, evaluate, checkpoint) -> summary.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections

from mmtx import config as config_lib
from mmtx import losses
from mmtx.evaluate.headline import headline
from mmtx.train import flops as flops_lib
from mmtx.train import startup
from mmtx.train.build import (  # noqa: F401  (re-exported: the loop's names before build.py)
    Run,
    abstract_train_state,
    build,
    create_train_state,
    jit_train_step,
)
from mmtx.train.console import log
from mmtx.train.metrics import Progress, format_seconds
from mmtx.train.pending_metrics import NonFiniteError, PendingMetrics
from mmtx.train.preemption import PreemptionWatcher
from mmtx.train.profiler import StepProfiler
from mmtx.train.schedule import Every
from mmtx.train.state import TrainState
from mmtx.train.step import LossFn
from mmtx.train.summary import CompileFigures, TrainFigures, summarize, write_summary
from mmtx.train.workdir_claim import claimed_workdir, write_config

__all__ = ["NonFiniteError", "train_and_evaluate"]


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    loss_fn: LossFn = losses.total_loss,
) -> dict[str, Any]:
    """Trains and evaluates as ``config`` says, in ``workdir``; returns the final summary.

    ``workdir`` must be new, empty or an mmtx workdir (:func:`mmtx.train.workdir.claim`), and
    one run at a time holds it (:func:`mmtx.train.workdir.lock`); otherwise
    :class:`~mmtx.train.workdir.WorkdirError` is raised before anything is written.

    A rerun with the same workdir resumes from the newest intact checkpoint and continues
    exactly (same batches, same RNG, same numbers); a checkpoint of a different run raises
    :class:`~mmtx.train.checkpoint.CheckpointMismatchError` and leaves the workdir as it was.
    An evaluation cut short by a kill is run again on resume; a rerun of a finished run
    reports the final step's recorded evaluation (:func:`mmtx.train.evaluate_checkpoint.
    evaluate_checkpoint` evaluates again). On SIGTERM or a first Ctrl-C the loop finishes the
    current step, saves a checkpoint, waits for it to commit and returns
    (``summary["preempted"]``); a second Ctrl-C raises ``KeyboardInterrupt`` at once.
    A non-finite loss, gradient or updated param raises :class:`NonFiniteError` naming the
    step when ``config.train.nonfinite == "stop"``, without saving a new checkpoint; with
    ``"skip"`` the update is skipped and the step listed in ``summary["nonfinite_steps"]``.
    Leaves ``workdir/config.json``, ``workdir/checkpoints``, ``workdir/evals.json``,
    TensorBoard event files and ``workdir/summary.json``.
    """
    config = config_lib.validate(config)
    train = config.train
    with claimed_workdir(workdir):
        wall_started = time.perf_counter()
        with contextlib.ExitStack() as cleanup:
            started = startup.start(config, workdir, loss_fn, cleanup)
            run, data, checkpointer = started.run, started.data, started.checkpointer
            state, step = startup.restore(started, config)
            _say_plan(step, train.steps)
            # Only now, with the checkpoint known to fit: config.json describes the checkpoints.
            write_config(config, workdir)
            startup.say_data(config, data)
            record_eval = startup.eval_recorder(started, config, workdir, cleanup)
            writer = record_eval.writer
            profiler = cleanup.enter_context(_profiler(train.profile_steps, workdir))
            progress = Progress(train.steps, step)
            pending = PendingMetrics(writer, progress, train.nonfinite, checkpointer.latest_step)
            first_step, train_started = step, time.perf_counter()
            evals, logs = Every(train.eval_every, train.steps), Every(train.log_every, train.steps)
            eval_metrics = record_eval.at_start(state, step, evals)
            preemption = cleanup.enter_context(PreemptionWatcher())
            # A wait for a save in flight gives up STOP_GRACE_SECONDS after a stop request.
            checkpointer.stop_requested = functools.partial(_stop_requested, preemption)
            compiled = _Compiled(run.train_step)
            if step < train.steps:
                compiled = _compile_train_step(config, run, state, data, started.facts)
                # ETAs, TFLOP/s and MFU without the compile.
                pending.progress = compiled.progress(train.steps, step)
            preempted, first_batch = False, compiled.first_batch
            while step < train.steps:
                profiler.before(step + 1, state)
                batch = run.to_global(next(data.iterator)) if first_batch is None else first_batch
                first_batch = None
                state, metrics = compiled.train_step(state, batch)
                step += 1
                pending.add(step, metrics)
                profiler.after(step, (state, metrics))
                if preemption.should_stop(step):
                    pending.flush_and_log(step, data, train.batch_size)
                    reason = preemption.reason or "preemption notice"
                    log(f"{reason}: saving a checkpoint at step {step} and exiting")
                    preempted = True
                    break
                if logs(step):
                    pending.flush_and_log(step, data, train.batch_size)
                elif evals(step) or checkpointer.would_save(step):
                    pending.flush()
                checkpointer.save(step, state, data.iterator)
                checkpointer.poll()  # a failed background save ends the run now
                if evals(step):
                    eval_metrics = record_eval(state, step)
            pending.flush()
            checkpointer.save(step, state, data.iterator, force=True)
            if not eval_metrics and not preempted:
                eval_metrics = record_eval(state, step)
        # Leaving the block committed the final checkpoint: the summary may say it is saved.
        seconds = time.perf_counter() - train_started
        nonfinite = tuple(pending.nonfinite_steps)
        figures = TrainFigures(
            first_step, step, seconds, compiled.figures, pending.last_loss, nonfinite, preempted
        )
        skipped = data.skipped() if data.file_source else None
        wall_seconds = time.perf_counter() - wall_started
        summary = summarize(config, started.facts, figures, eval_metrics, wall_seconds, skipped)
        path = write_summary(workdir, summary)
        _say_summary(summary, path, seconds, config.model.modalities)
    return summary


def _say_summary(
    summary: dict[str, Any], path: str, seconds: float, modalities: Sequence[str]
) -> None:
    """Says the summary's headline metrics (``final: {...}``), the steps trained in
    ``seconds`` and where the summary is."""
    log("final: " + json.dumps(headline(summary["eval"], modalities)))
    took = format_seconds(seconds)
    log(f"trained {summary['steps_this_run']} steps in {took}; summary in {path}")


def _say_plan(step: int, steps: int) -> None:
    """Says what the run does from ``step`` on (train to ``steps``, or nothing)."""
    if step < steps:
        log(f"training from step {step} to {steps}")
    else:
        log(
            f"nothing left to train: step {step} of train.steps={steps} is "
            "done (raise --config.train.steps to train on; --eval_only evaluates again)"
        )


def _profiler(steps: Any, workdir: str) -> contextlib.closing[StepProfiler]:
    """The run's :class:`~mmtx.train.profiler.StepProfiler` (``train.profile_steps``) into
    ``workdir/profile``, stopped on the way out (also on an error)."""
    return contextlib.closing(StepProfiler(steps, os.path.join(workdir, "profile")))


def _stop_requested(preemption: PreemptionWatcher) -> bool:
    """Whether SIGTERM or Ctrl-C asked the run to stop (a checkpoint save stops waiting)."""
    return preemption.signalled or preemption.aborted


@dataclasses.dataclass(frozen=True)
class _Compiled:
    """The train step as the loop runs it: compiled for the first batch (kept for step one;
    None, and ``train_step`` as built, when nothing is left to train) and its figures."""

    train_step: Any
    first_batch: dict[str, jax.Array] | None = None
    figures: CompileFigures = dataclasses.field(default_factory=CompileFigures)

    def progress(self, steps: int, step: int) -> Progress:
        """A progress counter of ``steps`` from ``step``, with MFU by this step's FLOPs."""
        figures = self.figures
        return Progress(steps, step, figures.flops_per_step, jax.device_count(), figures.peak_flops)


def _compile_train_step(
    config: ml_collections.ConfigDict,
    run: Run,
    state: TrainState,
    data: startup.TrainInput,
    facts: startup.ModelFacts,
) -> _Compiled:
    """Reads the first batch and compiles ``run.train_step`` for it, said in lines (the
    FLOPs behind MFU, the compile and its time)."""
    first_batch = run.to_global(next(data.iterator))
    count = flops_lib.analytic_flops(config, config.train.batch_size)
    peak, source = flops_lib.device_peak_flops(config.train.peak_flops, facts.device_kind)
    partial = "" if count["complete"] else " (the fusion is not counted)"
    log(
        f"MFU: {count['train'] / 1e9:.4g} GFLOP per step (analytic{partial}) against "
        f"{peak / 1e12:.4g} TFLOP/s per device ({source})"
    )
    log("compiling the train step...")
    started = time.perf_counter()
    train_step = run.train_step.lower(state, first_batch).compile()
    seconds = time.perf_counter() - started
    log(f"compiled the train step in {seconds:.1f}s")
    figures = CompileFigures(seconds, float(count["train"]), float(peak))
    return _Compiled(train_step, first_batch, figures)
