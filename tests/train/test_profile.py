"""config.train.profile_steps: a jax.profiler trace of exactly those steps in workdir/profile."""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from mmtx import config as config_lib
from mmtx.train import profiler as profiler_lib
from mmtx.train.loop import train_and_evaluate
from mmtx.train.profiler import StepProfiler


def tiny_config(steps: int):
    config = config_lib.apply_variant(config_lib.default_config(), "tiny")
    config.model.text.max_length = 32
    config.train.steps = steps
    config.train.batch_size = 8
    config.train.warmup_steps = 1
    config.train.log_every = 1000
    config.train.eval_every = 1000
    config.train.checkpoint_every = 1000
    config.train.peak_flops = 1e11  # no matmul measured
    config.eval.batch_size = 16
    config.data.eval_size = 16
    return config


def test_profile_steps_write_a_trace_and_off_writes_nothing(tmp_path):
    config = tiny_config(steps=4)
    config.train.profile_steps = (2, 3)
    train_and_evaluate(config, str(tmp_path / "on"))
    traces = glob.glob(str(tmp_path / "on" / "profile" / "plugins" / "profile" / "*" / "*"))
    assert any(path.endswith(".xplane.pb") for path in traces), traces
    assert all(os.path.getsize(path) > 0 for path in traces)

    config.train.profile_steps = (0, 0)
    train_and_evaluate(config, str(tmp_path / "off"))
    assert not os.path.exists(tmp_path / "off" / "profile")


def test_the_trace_is_started_and_stopped_around_exactly_those_steps(monkeypatch):
    events = []
    monkeypatch.setattr(jax.profiler, "start_trace", lambda logdir: events.append("start"))
    monkeypatch.setattr(jax.profiler, "stop_trace", lambda: events.append("stop"))
    monkeypatch.setattr(jax, "block_until_ready", lambda x: events.append(f"block {x}") or x)
    monkeypatch.setattr(profiler_lib, "log", lambda message: None)
    profiler = StepProfiler((3, 4), "unused")
    for step in range(1, 7):
        profiler.before(step, f"state{step - 1}")
        events.append(f"step {step}")
        profiler.after(step, f"out{step}")
    profiler.close()
    assert events == [
        "step 1",
        "step 2",
        "block state2",  # the steps before are done when the trace starts
        "start",
        "step 3",
        "step 4",
        "block out4",  # the last traced step is done when it stops
        "stop",
        "step 5",
        "step 6",
    ]


@pytest.mark.parametrize("steps", [(0, 0), ()])
def test_off_never_traces(steps, monkeypatch):
    monkeypatch.setattr(jax.profiler, "start_trace", lambda logdir: pytest.fail("traced"))
    profiler = StepProfiler(steps, "unused")
    for step in range(1, 4):
        profiler.before(step, None)
        profiler.after(step, None)


def test_a_resumed_run_past_start_traces_to_end_and_an_early_exit_stops(monkeypatch):
    events = []
    monkeypatch.setattr(jax.profiler, "start_trace", lambda logdir: events.append("start"))
    monkeypatch.setattr(jax.profiler, "stop_trace", lambda: events.append("stop"))
    monkeypatch.setattr(profiler_lib, "log", lambda message: None)
    profiler = StepProfiler((2, 10), "unused")
    profiler.before(5, None)  # resumed at step 4
    profiler.close()  # e.g. preempted at step 5
    assert events == ["start", "stop"]
    profiler.before(6, None)  # never restarted
    assert events == ["start", "stop"]


@pytest.mark.parametrize("steps", [(3, 2), (0, 4), (-1, 2), (1, 2, 3)])
def test_bad_profile_steps_are_refused(steps):
    config = tiny_config(steps=4)
    config.train.profile_steps = steps
    with pytest.raises(ValueError, match="profile_steps"):
        config_lib.validate(config)


PARSE = """
import sys
from absl import flags
from ml_collections import config_flags
from mmtx import config as config_lib
holder = config_flags.DEFINE_config_file("config", None, "")
flags.FLAGS(["main", "--config=configs/base.py", *sys.argv[1:]])
print(tuple(config_lib.validate(config_lib.split_comma_lists(holder.value)).train.profile_steps))
"""


def test_profile_steps_from_the_command_line():
    root = Path(__file__).resolve().parents[2]
    for flag, expected in (("2,3", "(2, 3)"), ("(5, 9)", "(5, 9)")):
        argv = [sys.executable, "-c", PARSE, f"--config.train.profile_steps={flag}"]
        result = subprocess.run(argv, cwd=root, capture_output=True, text=True, check=True)
        assert result.stdout.strip() == expected
    assert tuple(config_lib.default_config().train.profile_steps) == (0, 0)  # off
