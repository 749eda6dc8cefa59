"""Train and evaluate: ``python -m mmtx.main --config=configs/base.py --workdir=DIR``.

Any config field can be overridden on the command line, e.g.
``--config.train.steps=100 --config.fusion.type=gated``; ``--config=configs/base.py:tiny``
passes ``tiny`` to the file's ``get_config``. Rerunning with the same ``--workdir`` resumes.
Exits 0 when done or when stopped by SIGTERM or a first Ctrl-C (a checkpoint is saved first);
1 on a non-finite loss under ``config.train.nonfinite="stop"``, a workdir that is not mmtx's,
not writable or in use by another run, or a checkpoint made by a different config; 130 on a
second Ctrl-C (exits at once, the last committed checkpoint kept).

On a CPU host it first restarts itself with glibc malloc settings that let XLA reuse its
buffers (:mod:`mmtx.train.host_malloc`; ``MMTX_HOST_MALLOC=default`` turns that off).
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from mmtx.train import distributed, host_malloc
from mmtx.train.checkpoint import CheckpointMismatchError
from mmtx.train.loop import NonFiniteError, train_and_evaluate
from mmtx.train.workdir import WorkdirError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (path[:arg]).")
_WORKDIR = flags.DEFINE_string("workdir", "./workdir", "Directory for checkpoints and logs.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address",
    None,
    "host:port of process 0, for multi-process runs without "
    "cluster auto-detection (TPU VMs, Slurm and MPI are detected).",
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in a multi-process run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, from 0.")
flags.mark_flags_as_required(["config"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    try:
        summary = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except (NonFiniteError, WorkdirError, CheckpointMismatchError) as error:
        logging.error("%s", error)
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted: exiting without saving", file=sys.stderr, flush=True)
        # At once: don't wait for an async save or worker processes at interpreter exit.
        os._exit(130)
    if summary["preempted"]:
        print(f"preempted: checkpoint saved at step {summary['step']}; rerun to resume")


if __name__ == "__main__":
    host_malloc.restart_with_tuned_malloc()
    app.run(main)
