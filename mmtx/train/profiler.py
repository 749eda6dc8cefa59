"""``StepProfiler``: a ``jax.profiler`` trace of chosen train steps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax

from mmtx.train.console import log


class StepProfiler:
    """A ``jax.profiler`` trace of train steps ``START..END`` (1-based, inclusive) in ``logdir``.

    The trace starts before step START fetches its batch, once the previous steps are done
    (blocked on), and stops after step END's state and metrics are ready, so it holds exactly
    those steps. ``logdir`` gets TensorBoard's profile plugin layout
    (``plugins/profile/<run>/<host>.xplane.pb``). ``(0, 0)`` or ``()`` is off. A resumed run
    past START traces from its first step up to END; one past END traces nothing.
    """

    def __init__(self, steps: Sequence[int], logdir: str):
        steps = tuple(steps)
        self.start, self.end = steps if len(steps) == 2 else (0, 0)
        self.logdir = logdir
        self.active = False
        self.done = self.start <= 0

    def before(self, step: int, state: Any) -> None:
        """Called before step ``step`` (1-based) runs."""
        if self.done or self.active or not self.start <= step <= self.end:
            return
        jax.block_until_ready(state)
        jax.profiler.start_trace(self.logdir)
        self.active = True
        log(f"profiling steps {step}..{self.end} to {self.logdir}")

    def after(self, step: int, outputs: Any) -> None:
        """Called after step ``step`` was dispatched, with its outputs."""
        if self.active and step >= self.end:
            jax.block_until_ready(outputs)
            self.close()
            log(f"profile of steps up to {step} written to {self.logdir}")

    def close(self) -> None:
        """Stops a running trace (also on an early exit)."""
        if self.active:
            jax.profiler.stop_trace()
            self.active = False
            self.done = True
