"""``Every``: the steps a run logs, evaluates at."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Every:
    """A schedule of steps (ints from 1): the multiples of ``every`` and the ``last`` step."""

    every: int
    last: int

    def __call__(self, step: int) -> bool:
        """Whether ``step`` is on the schedule."""
        return step % self.every == 0 or step == self.last

    def due_at_start(self, step: int) -> bool:
        """Whether a run that starts at ``step`` (resumed, or rerun past ``last``) owes it
        this schedule's action: a multiple of ``every``, or ``last`` or past it; never 0."""
        return step > 0 and (step % self.every == 0 or step >= self.last)
