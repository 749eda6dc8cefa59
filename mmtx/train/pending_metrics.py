"""``PendingMetrics``: the train steps' metrics, kept on the device until a log, eval or
checkpoint step fetches them, then written, logged and checked for non-finite steps.

Fetching only at those steps keeps the host from blocking on each step, so input and
compute overlap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from mmtx.data import bad_examples
from mmtx.train.console import log
from mmtx.train.metrics import MetricWriter, Progress
from mmtx.train.startup import TrainInput


class NonFiniteError(RuntimeError):
    """The loss or a gradient was not finite and ``config.train.nonfinite`` is ``"stop"``."""


class PendingMetrics:
    """The metrics of the steps not yet fetched, and what fetching them found.

    Args:
      writer: TensorBoard scalars (``train/<name>`` at each step).
      progress: the progress line's :class:`~mmtx.train.metrics.Progress` (replaced once
        the step's FLOPs are known).
      nonfinite: ``config.train.nonfinite``: ``"stop"`` raises :class:`NonFiniteError`,
        ``"skip"`` logs the step (the step itself skipped the update).
      latest_checkpoint: ``() -> step`` of the newest checkpoint (for the error message).

    Attributes:
      nonfinite_steps: the steps whose loss, gradients or update were not finite.
      last_loss: the newest fetched step's loss (None before the first fetch).
    """

    def __init__(
        self,
        writer: MetricWriter,
        progress: Progress,
        nonfinite: str,
        latest_checkpoint: Callable[[], int | None],
    ):
        self.writer = writer
        self.progress = progress
        self.nonfinite = nonfinite
        self.latest_checkpoint = latest_checkpoint
        self.pending: list[tuple[int, dict[str, jax.Array]]] = []
        self.nonfinite_steps: list[int] = []
        self.last_loss: float | None = None

    def add(self, step: int, metrics: dict[str, jax.Array]) -> None:
        """Keeps step ``step``'s metrics (float32 scalars on the device) until :meth:`flush`."""
        self.pending.append((step, metrics))

    def flush(self) -> dict[str, Any] | None:
        """Fetches the pending steps' metrics, writes them and applies the non-finite policy;
        returns the newest step's metrics (numpy scalars), None when none were pending."""
        if not self.pending:
            return None
        fetched = jax.device_get(self.pending)
        self.pending = []
        for step, values in fetched:
            self.writer.write_scalars(step, {f"train/{k}": v for k, v in values.items()})
            if values["nonfinite"] > 0:
                self._nonfinite(step, values)
        self.last_loss = float(fetched[-1][1]["loss"])
        return fetched[-1][1]

    def _nonfinite(self, step: int, values: dict[str, Any]) -> None:
        self.nonfinite_steps.append(step)
        if self.nonfinite == "stop":
            raise NonFiniteError(
                f"non-finite loss, gradients or updated params at step {step} "
                f"(loss {float(values['loss'])}, grad_norm "
                f"{float(values['grad_norm'])}); stopped without saving a new "
                f"checkpoint (latest: step {self.latest_checkpoint()}). "
                "Set config.train.nonfinite='skip' to skip such steps instead."
            )
        log(f"step {step}: non-finite loss, gradients or updated params; update skipped")

    def flush_and_log(self, step: int, data: TrainInput, batch_size: int) -> None:
        """:meth:`flush`, then the progress line of ``step``: loss, accuracy, speed, the
        epoch (when ``data.epoch_size`` is known) and a file source's skipped examples."""
        latest = self.flush()
        if latest is None:
            return
        line = self.progress.line(step, {k: latest[k] for k in ("loss", "accuracy") if k in latest})
        if data.epoch_size:
            line += f" | epoch {step * batch_size / data.epoch_size:.2f}"
        skipped = bad_examples.describe(data.skipped()) if data.file_source else ""
        log(f"{line} | {skipped}" if skipped else line)
        if self.progress.perf:
            self.writer.write_scalars(
                step, {f"train/{k}": v for k, v in self.progress.perf.items()}
            )
