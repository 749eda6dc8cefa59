"""``EvalRecorder``: evaluations of a train state at a step, recorded: said in progress
lines, written as ``eval/*`` TensorBoard scalars and to ``workdir/evals.json``."""

from __future__ import annotations

import time
from typing import Any

import jax

from mmtx.evaluate.evaluator import Evaluator
from mmtx.evaluate.headline import headline
from mmtx.train import workdir as workdir_lib
from mmtx.train.console import log
from mmtx.train.metrics import MetricWriter
from mmtx.train.schedule import Every
from mmtx.train.state import TrainState


class EvalRecorder:
    """Runs ``evaluator`` on train states and records the metrics in ``workdir``.

    Args:
      evaluator: the run's :class:`~mmtx.evaluate.evaluator.Evaluator`.
      writer: TensorBoard scalars (``eval/<name>`` at the step).
      workdir: the run's workdir (``evals.json``).
      show: whether each evaluation's line shows its headline metrics (the evaluate command
        prints the metrics once, as its result, instead).
    """

    def __init__(
        self, evaluator: Evaluator, writer: MetricWriter, workdir: str, *, show: bool = True
    ):
        self.evaluator = evaluator
        self.writer = writer
        self.workdir = workdir
        self.show = show

    def __call__(self, state: TrainState, step: int) -> dict[str, float]:
        """The metrics of ``state``'s params at ``step`` (and of its EMA params, prefixed
        ``ema/``), recorded; ``{}`` when the config has no eval data. Each evaluation is
        said in a line with its time."""
        if not self.evaluator.enabled:
            return {}
        metrics = self._timed(state.params, f"eval at step {step}")
        if state.ema_params is not None:  # the moving average, beside the params
            ema_metrics = self._timed(state.ema_params, f"eval of the EMA params at step {step}")
            metrics.update({f"ema/{k}": v for k, v in ema_metrics.items()})
        self.writer.write_scalars(step, {f"eval/{k}": v for k, v in metrics.items()})
        if jax.process_index() == 0:
            workdir_lib.record_eval(self.workdir, step, metrics)
        return metrics

    def _timed(self, params: Any, what: str) -> dict[str, float]:
        """``evaluator.run(params)``, said in a line ``<what> (<seconds>s)[: <headline>]``."""
        started = time.perf_counter()
        metrics = self.evaluator.run(params)
        modalities = self.evaluator.config.model.modalities
        shown = f": {headline(metrics, modalities)}" if self.show else ""
        log(f"{what} ({time.perf_counter() - started:.1f}s){shown}")
        return metrics

    def at_start(self, state: TrainState, step: int, schedule: Every) -> dict[str, float]:
        """The evaluation owed by a run that starts at ``step`` (:meth:`~mmtx.train.schedule.
        Every.due_at_start`): run now when the interrupted run did not record it; read from
        ``evals.json`` (and said) when no step is left to train; else ``{}``."""
        recorded = workdir_lib.read_evals(self.workdir)
        if not self.evaluator.enabled or not schedule.due_at_start(step):
            return {}
        if step not in recorded:
            log(f"evaluating step {step}, which the interrupted run did not finish")
            return self(state, step)
        if step < schedule.last:
            return {}
        metrics = recorded[step]
        shown = headline(metrics, self.evaluator.config.model.modalities)
        log(f"eval at step {step} (recorded in {workdir_lib.EVALS}): {shown}")
        return metrics
