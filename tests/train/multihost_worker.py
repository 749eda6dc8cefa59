"""Run by tests/train/test_distributed.py: one process of a (possibly multi-process) run.

usage: multihost_worker.py WORKDIR OUT.npz NUM_PROCESSES PROCESS_ID PORT

Trains a tiny model with mmtx.train.loop and, on process 0, saves the final params (gathered
from every process) to OUT.npz.
"""

import sys

import jax
import numpy as np

from mmtx import config as config_lib
from mmtx.train import distributed
from mmtx.train.checkpoint import Checkpointer


def main():
    workdir, out, num_processes, process_id, port = sys.argv[1:]
    num_processes, process_id = int(num_processes), int(process_id)
    if num_processes > 1:
        assert distributed.initialize(f"127.0.0.1:{port}", num_processes, process_id)
    # Imported after initialize(): nothing may touch the devices before it.
    from mmtx.train.loop import train_and_evaluate

    config = config_lib.apply_variant(config_lib.default_config(), "tiny")
    config.model.text.max_length = 16
    config.train.steps = 3
    config.train.batch_size = 8
    config.train.checkpoint_every = 3
    config.train.log_every = 1
    config.eval.batch_size = 8
    config.data.eval_size = 16
    summary = train_and_evaluate(config, workdir)
    assert summary["step"] == 3
    assert jax.process_count() == num_processes

    # Every process restores the whole arrays onto one local device.
    checkpointer = Checkpointer(f"{workdir}/checkpoints", read_only=True)
    state, _ = checkpointer.restore_arrays()
    checkpointer.close()
    params = state["params"]
    if jax.process_index() == 0:
        flat = {jax.tree_util.keystr(p): np.asarray(x) for p, x in
                jax.tree_util.tree_leaves_with_path(params)}  # fmt: skip
        flat["eval_accuracy"] = np.asarray(summary["eval"]["accuracy"])
        np.savez(out, **flat)


if __name__ == "__main__":
    main()
