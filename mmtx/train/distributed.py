"""Multi-process (multi-host) start-up: one process per host, all running the same command."""

from __future__ import annotations

import os

import jax

# Environment variables that mean "this is one worker of several" on the platforms JAX
# auto-detects (Cloud TPU VMs, Slurm, Open MPI); there, initialize() needs no arguments.
_CLUSTER_HINTS = ("TPU_WORKER_HOSTNAMES", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")


def _cluster_detected() -> bool:
    hostnames = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    if "," in hostnames:
        return True
    for name in _CLUSTER_HINTS[1:]:
        if int(os.environ.get(name, "1") or 1) > 1:
            return True
    return False


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Calls ``jax.distributed.initialize`` when this run has several processes.

    With ``coordinator_address`` (``host:port`` of process 0), ``num_processes`` and
    ``process_id`` given, those are used (e.g. several processes on one machine, or hosts
    without cluster auto-detection). Otherwise JAX's auto-detection is used when the
    environment shows a multi-worker TPU VM, Slurm or MPI job. A single process does nothing.
    Must run before anything touches the devices. Returns whether it initialized.
    """
    if coordinator_address is not None or (num_processes or 1) > 1:
        if coordinator_address is None or num_processes is None or process_id is None:
            raise ValueError(
                "multi-process runs need coordinator_address, num_processes and process_id "
                f"together; got {coordinator_address!r}, {num_processes!r}, {process_id!r}"
            )
        if not 0 <= process_id < num_processes:
            raise ValueError(f"process_id={process_id} must be in [0, {num_processes})")
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
        )
        return True
    if _cluster_detected():
        jax.distributed.initialize()
        return True
    return False
