"""Progress lines: what a run says it does, on stdout of the first process."""

from __future__ import annotations

import jax
from absl import logging


def log(message: str) -> None:
    """Prints ``message`` on the first process (flushed) and logs it to the absl log."""
    logging.info(message)
    if jax.process_index() == 0:
        print(message, flush=True)
