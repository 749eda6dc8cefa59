"""Tests for mmtx/train/checkpoint.py: what is damage, what is a different run, and topology.

Small states (a few arrays and their Adam moments) and grain range datasets keep these fast;
tests/train/test_loop.py and test_fault_tolerance.py cover the same paths in real runs.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl import logging as absl_logging

from mmtx.train import checkpoint as checkpoint_lib
from mmtx.train.checkpoint import (
    CORRUPT_DIRECTORY_SUFFIX,
    CheckpointDamagedError,
    Checkpointer,
    CheckpointMismatchError,
    CheckpointSaveError,
    config_differences,
)
from mmtx.train.preemption import PreemptionWatcher
from mmtx.train.state import TrainState

CONFIG = {"train": {"grad_clip": 1.0, "steps": 10}, "model": {"width": 4}}


def make_state(step: int, tx=None, width: int = 4) -> TrainState:
    tx = tx or optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
    rng = np.random.default_rng(step)
    params = {
        "dense": {
            "kernel": jnp.asarray(rng.normal(size=(width, 3)), jnp.float32),
            "bias": jnp.asarray(rng.normal(size=(3,)), jnp.float32),
        },
        "embed": jnp.asarray(rng.normal(size=(64, width)), jnp.float32),
    }
    return TrainState(
        step=jnp.asarray(step, jnp.int32),
        params=params,
        opt_state=tx.init(params),
        rng=jax.random.PRNGKey(step),
    )


def make_iterator(batch: int = 4):
    return iter(grain.MapDataset.range(1000).batch(batch).to_iter_dataset())


def save_steps(directory, steps=(1, 2, 3), config=CONFIG, keep=5):
    """Saves ``steps`` (the iterator advanced once per step); returns the iterators' batches
    that follow each step, to check where a restored iterator resumes."""
    checkpointer = Checkpointer(directory, keep=keep, config=config)
    iterator = make_iterator()
    following = {}
    for step in steps:
        next(iterator)
        checkpointer.save(step, make_state(step), iterator)
        checkpointer.wait()
        following[step] = next(make_iterator_at(iterator))
    checkpointer.close()
    return following


def make_iterator_at(iterator):
    copy = make_iterator()
    copy.set_state(iterator.get_state())
    return copy


def restore(directory, state=None, iterator=None, step=None, config=CONFIG, read_only=False):
    checkpointer = Checkpointer(directory, read_only=read_only, config=config)
    try:
        return checkpointer.restore(state or make_state(0), iterator, step)
    finally:
        checkpointer.close()


def assert_trees_equal(got, want):
    jax.tree.map(np.testing.assert_array_equal, got, want)


def data_files(directory, step):
    root = os.path.join(directory, str(step), "state")
    return [
        os.path.join(r, name)
        for r, _, names in os.walk(root)
        for name in names
        if os.path.basename(r) == "d"
    ]


def test_restores_the_newest_step_with_its_data_position(tmp_path):
    directory = str(tmp_path / "checkpoints")
    following = save_steps(directory)
    iterator = make_iterator()
    state, step = restore(directory, iterator=iterator)
    assert step == 3
    assert_trees_equal(state, make_state(3))
    np.testing.assert_array_equal(next(iterator), following[3])


def test_flipped_bytes_are_detected_and_the_previous_step_used(tmp_path):
    """Bit rot inside an array file must not load silently (it used to: one leaf off by 6e37)."""
    directory = str(tmp_path / "checkpoints")
    following = save_steps(directory)
    for path in data_files(directory, 3):
        size = os.path.getsize(path)
        if size < 64:
            continue
        with open(path, "r+b") as f:
            f.seek(size // 2)
            chunk = f.read(16)
            f.seek(size // 2)
            f.write(bytes(b ^ 0xFF for b in chunk))
    iterator = make_iterator()
    state, step = restore(directory, iterator=iterator)
    assert step == 2
    assert_trees_equal(state, make_state(2))
    np.testing.assert_array_equal(next(iterator), following[2])
    aside = directory + CORRUPT_DIRECTORY_SUFFIX
    assert os.listdir(aside) == ["3"]
    with open(os.path.join(aside, "3", "REASON.txt")) as f:
        assert "step 3" in f.read()


def test_a_changed_array_value_fails_the_fingerprint_check(tmp_path):
    """The record's fingerprint of one leaf no longer matching is damage (the comparison
    itself, independent of how orbax lays out its files)."""
    directory = str(tmp_path / "checkpoints")
    save_steps(directory)
    path = os.path.join(directory, "3", "integrity", "metadata")
    with open(path) as f:
        record = json.load(f)
    record["fingerprints"]["params/embed"] = "0" * 16
    with open(path, "w") as f:
        json.dump(record, f)
    checkpointer = Checkpointer(directory, read_only=True)
    with pytest.raises(CheckpointDamagedError, match=r"1 array\(s\) differ.*params/embed"):
        checkpointer.restore_arrays(step=3)
    assert checkpointer.restore_arrays()[1] == 2  # read-only: skipped, not moved
    assert os.path.isdir(os.path.join(directory, "3"))


@pytest.mark.parametrize("damage", ["truncate", "zero", "delete"])
def test_truncated_zeroed_or_deleted_files_are_damage(tmp_path, damage):
    directory = str(tmp_path / "checkpoints")
    save_steps(directory)
    for path in data_files(directory, 3):
        if damage == "delete":
            os.remove(path)
        else:
            size = os.path.getsize(path)
            with open(path, "r+b") as f:
                if damage == "truncate":
                    f.truncate(size // 2)
                else:
                    f.write(b"\0" * size)
    _, step = restore(directory)
    assert step == 2
    assert os.path.isdir(os.path.join(directory + CORRUPT_DIRECTORY_SUFFIX, "3"))


def test_a_changed_data_position_file_is_damage(tmp_path):
    directory = str(tmp_path / "checkpoints")
    save_steps(directory)
    path = os.path.join(directory, "3", "data", "process_0-of-1.json")
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace("3", "7"))
    _, step = restore(directory, iterator=make_iterator())
    assert step == 2


def test_a_changed_optimizer_is_a_mismatch_that_moves_nothing(tmp_path):
    """Resuming with grad_clip=0 (another optimizer structure) used to set every checkpoint
    aside as unreadable, and a later run deleted them."""
    directory = str(tmp_path / "checkpoints")
    save_steps(directory)
    before = sorted(os.listdir(tmp_path))
    changed = {"train": {"grad_clip": 0.0, "steps": 20}, "model": {"width": 4}}
    with pytest.raises(CheckpointMismatchError) as error:
        restore(directory, state=make_state(0, tx=optax.adam(1e-3)), config=changed)
    message = str(error.value)
    assert "different optimizer config" in message
    assert "train.grad_clip: 1.0 -> 0.0" in message
    assert "fine to change on resume: train.steps: 10 -> 20" in message
    assert "Nothing was moved or deleted" in message
    assert sorted(os.listdir(tmp_path)) == before
    assert sorted(os.listdir(directory)) == ["1", "2", "3"]
    # The original config still resumes from the newest step.
    assert restore(directory)[1] == 3


def test_a_changed_model_names_the_array_and_both_shapes(tmp_path):
    directory = str(tmp_path / "checkpoints")
    save_steps(directory)
    with pytest.raises(CheckpointMismatchError) as error:
        restore(directory, state=make_state(0, width=8), config={**CONFIG, "model": {"width": 8}})
    message = str(error.value)
    assert "different model config" in message and "params/dense/kernel" in message
    assert "(4, 3)" in message and "(8, 3)" in message and "model.width: 4 -> 8" in message
    assert sorted(os.listdir(directory)) == ["1", "2", "3"]
    # Many changed fields: the first five, a count of the rest, and where to see them all.
    many = {**CONFIG, "model": {"width": 8, **{f"extra{i}": i for i in range(9)}}}
    with pytest.raises(CheckpointMismatchError) as error:
        restore(directory, state=make_state(0, width=8), config=many)
    message = str(error.value)
    assert message.count(" -> ") == 5 and "; and 5 more (--verbosity=1 lists them all" in message
    assert os.path.join(str(tmp_path), "config.json") in message
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(1)
    try:
        with pytest.raises(CheckpointMismatchError) as error:
            restore(directory, state=make_state(0, width=8), config=many)
    finally:
        absl_logging.set_verbosity(verbosity)
    assert str(error.value).count(" -> ") == 10 and "more" not in str(error.value)


def test_a_different_data_pipeline_is_a_mismatch(tmp_path):
    directory = str(tmp_path / "checkpoints")
    save_steps(directory)
    other = iter(grain.MapDataset.range(1000).batch(4).to_iter_dataset().mp_prefetch())
    try:
        with pytest.raises(CheckpointMismatchError, match="data position saved at step 3"):
            restore(directory, iterator=other)
    finally:
        other.close()
    assert sorted(os.listdir(directory)) == ["1", "2", "3"]


def test_set_aside_never_overwrites_an_earlier_set_aside(tmp_path):
    directory = str(tmp_path / "checkpoints")
    aside = os.path.join(directory + CORRUPT_DIRECTORY_SUFFIX, "3")
    os.makedirs(aside)
    with open(os.path.join(aside, "keep.txt"), "w") as f:
        f.write("an earlier damaged step 3")
    save_steps(directory)
    shutil.rmtree(os.path.join(directory, "3", "integrity"))
    os.makedirs(os.path.join(directory, "3", "integrity"))  # present but unreadable
    assert restore(directory)[1] == 2
    assert sorted(os.listdir(directory + CORRUPT_DIRECTORY_SUFFIX)) == ["3", "3.1"]
    assert os.path.exists(os.path.join(aside, "keep.txt"))


def test_config_differences_lists_what_matters_first():
    saved = {"train": {"grad_clip": 1.0, "steps": 5}, "data": {"num_workers": 0}}
    current = {"train": {"grad_clip": 1.0, "steps": 9}, "data": {"num_workers": 2}}
    assert config_differences(saved, current) == (
        "data.num_workers: 0 -> 2 (also, fine to change on resume: train.steps: 5 -> 9)"
    )
    assert config_differences(saved, {**saved, "train": {"grad_clip": 1.0, "steps": 7}}) == (
        "train.steps: 5 -> 7 (fine to change on resume)"
    )
    assert config_differences(saved, saved) == ""
    assert config_differences(None, current) == ""


def test_config_differences_shows_the_first_few_and_counts_the_rest():
    saved = {"model": {f"f{i}": i for i in range(8)}, "train": {"steps": 5}}
    current = {"model": {f"f{i}": i + 1 for i in range(8)}, "train": {"steps": 9}}
    assert config_differences(saved, current, limit=3) == (
        "model.f0: 0 -> 1; model.f1: 1 -> 2; model.f2: 2 -> 3; and 6 more"
    )
    everything = config_differences(saved, current)
    assert everything.count(" -> ") == 9 and "more" not in everything
    fine_only = {"train": {"steps": 5, "log_every": 1}}
    assert config_differences(fine_only, {"train": {"steps": 6, "log_every": 2}}, limit=1) == (
        "train.log_every: 1 -> 2; and 1 more (fine to change on resume)"
    )


SAVE_ON_EIGHT_DEVICES = """
import sys, jax, numpy as np, optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
sys.path.insert(0, sys.argv[2])
from test_checkpoint import make_state
from mmtx.train.checkpoint import Checkpointer
mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "fsdp"))
state = make_state(5)
def shard(x):
    spec = P("fsdp") if x.ndim and x.shape[0] % 4 == 0 else P()
    return jax.device_put(x, NamedSharding(mesh, spec))
state = jax.tree.map(shard, state)
assert len(state.params["embed"].addressable_shards) == 8
checkpointer = Checkpointer(sys.argv[1])
checkpointer.save(5, state)
checkpointer.wait()
checkpointer.close()
"""


def test_a_checkpoint_saved_on_eight_devices_restores_on_one(tmp_path):
    """Trained on a pod (here 8 simulated devices, data 2 x fsdp 4), used on a laptop: a
    topology change is neither an error nor damage."""
    directory = str(tmp_path / "checkpoints")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    subprocess.run(
        [sys.executable, "-c", SAVE_ON_EIGHT_DEVICES, directory, os.path.dirname(__file__)],
        env=env,
        check=True,
        capture_output=True,
    )
    checkpointer = Checkpointer(directory, read_only=True)
    arrays, step = checkpointer.restore_arrays()
    checkpointer.close()
    assert step == 5
    assert_trees_equal(arrays["params"], make_state(5).params)
    state, step = restore(directory, read_only=True)
    assert step == 5 and state.params["embed"].sharding.num_devices == 1
    assert_trees_equal(state, make_state(5))


def test_a_save_that_cannot_be_written_fails_at_once(tmp_path):
    """A save into a directory that became unwritable used to wait for orbax's 300 s timeout
    (the array writer waited for a directory that was never created), then exit 1."""
    directory = str(tmp_path / "checkpoints")
    checkpointer = Checkpointer(directory, keep=3)
    iterator = make_iterator()
    checkpointer.save(1, make_state(1), iterator)
    checkpointer.wait()
    # Root ignores permissions, so a file in the directory's place makes the write fail.
    os.rename(directory, directory + "_moved")
    with open(directory, "w") as f:
        f.write("not a directory")
    with pytest.raises(CheckpointSaveError, match=r"step 2 .* failed: NotADirectoryError.* "
                       r"there is no earlier checkpoint"):  # fmt: skip
        checkpointer.save(2, make_state(2), iterator)
    checkpointer.wait()
    checkpointer.close()


def test_a_stop_request_bounds_the_wait_for_a_save_that_never_ends(tmp_path, monkeypatch):
    """SIGTERM or Ctrl-C while a save hangs (orbax waiting on a write that never completes):
    the wait gives up after STOP_GRACE_SECONDS, naming the last good step."""
    checkpointer = Checkpointer(str(tmp_path / "checkpoints"), keep=3)
    iterator = make_iterator()
    checkpointer.save(1, make_state(1), iterator)
    checkpointer.wait()
    # A save that starts and never ends (orbax's save and progress, replaced).
    monkeypatch.setattr(checkpointer.manager, "save", lambda *args, **kwargs: True)
    monkeypatch.setattr(checkpointer.manager, "is_saving_in_progress", lambda: True)
    checkpointer.save(2, make_state(2), iterator)
    monkeypatch.setattr(checkpoint_lib, "STOP_GRACE_SECONDS", 0.3)
    with PreemptionWatcher() as watcher:
        checkpointer.stop_requested = lambda: watcher.signalled
        timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM))
        timer.start()
        started = time.monotonic()
        message = r"step 2 was still being written 0.3 s after the stop request; .* step 1\)"
        with pytest.raises(CheckpointSaveError, match=message):
            checkpointer.wait()
        assert 0.5 <= time.monotonic() - started < 5
    monkeypatch.undo()
    checkpointer.close()  # returns at once: the abandoned save is not waited for
