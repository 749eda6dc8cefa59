"""Tests for mmtx/train/workdir.py: claiming a workdir, the run lock, and the eval record."""

import json
import os
import signal
import subprocess
import sys

import pytest

from mmtx.train import workdir as workdir_lib
from mmtx.train.workdir import WorkdirError


def test_a_new_or_empty_directory_is_claimed_with_a_marker(tmp_path):
    new = str(tmp_path / "new" / "run")
    workdir_lib.claim(new)
    with open(os.path.join(new, workdir_lib.MARKER)) as f:
        assert json.load(f)["format"] == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    workdir_lib.claim(str(empty))
    assert (empty / workdir_lib.MARKER).exists()
    workdir_lib.claim(new)  # claimed already: fine


def test_another_projects_directory_is_refused_and_left_alone(tmp_path):
    """It used to be overwritten: config.json and summary.json rewritten, checkpoints moved."""
    foreign = tmp_path / "other_project"
    (foreign / "checkpoints" / "1000").mkdir(parents=True)
    (foreign / "config.json").write_text('{"theirs": 1}')
    (foreign / "summary.json").write_text('{"theirs": 2}')
    with pytest.raises(WorkdirError, match=r"not empty \(checkpoints, config.json, summary"):
        workdir_lib.claim(str(foreign))
    assert sorted(os.listdir(foreign)) == ["checkpoints", "config.json", "summary.json"]
    assert (foreign / "config.json").read_text() == '{"theirs": 1}'
    # Adopting it by hand (a workdir from before markers) is allowed.
    (foreign / workdir_lib.MARKER).touch()
    workdir_lib.claim(str(foreign))


def test_a_file_or_an_unwritable_directory_is_refused(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(WorkdirError, match="is not a directory"):
        workdir_lib.claim(str(path))
    # /sys refuses new files even to root, so it stands in for a read-only mount.
    with pytest.raises(WorkdirError, match="/sys is not writable"):
        workdir_lib.check_writable("/sys")
    run = tmp_path / "run"
    workdir_lib.claim(str(run))
    os.symlink("/sys/kernel", run / "checkpoints")
    with pytest.raises(WorkdirError, match="checkpoints is not writable"):
        workdir_lib.claim(str(run))


HOLD_LOCK = """
import sys, time
from mmtx.train import workdir
with workdir.lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


def hold_lock(path):
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, path], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "locked"
    return process


def test_one_run_per_workdir_and_a_dead_holder_is_taken_over(tmp_path):
    path = str(tmp_path)
    holder = hold_lock(path)
    try:
        with pytest.raises(WorkdirError, match=rf"in use by pid {holder.pid} on host"):
            with workdir_lib.lock(path):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # kill -9 left the lock file behind, but the kernel released the lock with the process.
    assert os.path.exists(os.path.join(path, workdir_lib.LOCK))
    with workdir_lib.lock(path):
        with open(os.path.join(path, workdir_lib.LOCK)) as f:
            assert json.load(f)["pid"] == os.getpid()
    with workdir_lib.lock(path):  # released on exit, so it can be taken again
        pass


def test_evals_are_recorded_by_step(tmp_path):
    path = str(tmp_path)
    assert workdir_lib.read_evals(path) == {}
    workdir_lib.record_eval(path, 10, {"accuracy": 0.5})
    workdir_lib.record_eval(path, 20, {"accuracy": 0.75})
    workdir_lib.record_eval(path, 10, {"accuracy": 0.25})
    assert workdir_lib.read_evals(path) == {10: {"accuracy": 0.25}, 20: {"accuracy": 0.75}}
    assert not [name for name in os.listdir(path) if name.startswith(".tmp")]


def test_claim_says_whether_it_made_the_workdir(tmp_path):
    new = str(tmp_path / "run")
    assert workdir_lib.claim(new) is True
    assert workdir_lib.claim(new) is False


def test_a_workdir_with_nothing_worth_keeping_is_removed(tmp_path):
    early = tmp_path / "early"
    workdir_lib.claim(str(early))
    (early / workdir_lib.LOCK).write_text("{}")
    (early / "config.json").write_text("{}")
    (early / "checkpoints").mkdir()
    assert workdir_lib.remove_if_nothing_kept(str(early))
    assert not early.exists()
    for kept in ("checkpoints/1/x", "evals.json", "events.out.tfevents.1", "notes.txt"):
        workdir = tmp_path / kept.replace("/", "_")
        workdir_lib.claim(str(workdir))
        (workdir / kept).parent.mkdir(parents=True, exist_ok=True)
        (workdir / kept).write_text("worth keeping")
        assert not workdir_lib.remove_if_nothing_kept(str(workdir))
        assert (workdir / kept).exists() and (workdir / workdir_lib.MARKER).exists()
