"""Tests for mmtx/train/distributed.py: two real processes on 127.0.0.1 train together
(jax.distributed over gloo) and end where one process ends."""

import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from mmtx.train import distributed

REPO = pathlib.Path(__file__).resolve().parents[2]
WORKER = REPO / "tests" / "train" / "multihost_worker.py"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(workdir, out, num_processes, process_id, port):
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
    )
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(workdir), str(out), str(num_processes),
         str(process_id), str(port)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def test_two_processes_match_one(tmp_path):
    port = free_port()
    processes = [launch(tmp_path / "two", tmp_path / "two.npz", 2, i, port) for i in (0, 1)]
    single = launch(tmp_path / "one", tmp_path / "one.npz", 1, 0, 0)
    for process in (*processes, single):
        output = process.communicate(timeout=600)[0]
        assert process.returncode == 0, output[-4000:]
    two, one = np.load(tmp_path / "two.npz"), np.load(tmp_path / "one.npz")
    assert set(two.files) == set(one.files)
    for name in one.files:
        scale = max(float(np.abs(one[name]).max()), 1e-3)
        np.testing.assert_allclose(two[name], one[name], rtol=0, atol=1e-5 * scale, err_msg=name)


def test_single_process_does_not_initialize(monkeypatch):
    for name in ("TPU_WORKER_HOSTNAMES", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.initialize() is False
    assert distributed.initialize(num_processes=1) is False


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(coordinator_address="127.0.0.1:1234"), "together"),
        (dict(coordinator_address="127.0.0.1:1234", num_processes=2, process_id=2), "process_id"),
    ],
)
def test_incomplete_multi_process_flags_are_an_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        distributed.initialize(**kwargs)


def test_sigterm_to_one_host_stops_every_host_at_the_same_step(tmp_path):
    """The scheduler may notify one host only; JAX's preemption sync point makes every host
    save the same step and exit 0."""
    import re
    import signal
    import time

    port = free_port()
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "mmtx.main", "--config=configs/base.py:tiny",
             f"--workdir={tmp_path}", "--config.train.batch_size=8",
             "--config.eval.batch_size=8", "--config.data.eval_size=8",
             "--config.model.text.max_length=16", "--config.train.steps=400",
             "--config.model.modalities=text,image",  # two towers: 42 s less compiling
             "--config.train.checkpoint_every=20", "--config.train.log_every=10",
             f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
             f"--process_id={i}"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for i in (0, 1)
    ]  # fmt: skip
    first = tmp_path / "checkpoints" / "20"
    deadline = time.monotonic() + 300
    while not first.exists() and time.monotonic() < deadline:
        assert all(p.poll() is None for p in processes), processes[0].stdout.read()[-3000:]
        time.sleep(0.01)
    processes[1].send_signal(signal.SIGTERM)
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]
    steps = [re.findall(r"preempted: checkpoint saved at step (\d+)", out) for out in outputs]
    assert steps[0] and steps[0] == steps[1], outputs[0][-2000:]
    assert int(steps[0][0]) < 400
    assert (tmp_path / "checkpoints" / steps[0][0]).is_dir()
