"""Tests for mmtx/main.py: the command line trains, applies --config.x.y overrides, resumes."""

import json
import os
import pathlib
import re
import subprocess
import sys
import types

import jax

REPO = pathlib.Path(__file__).resolve().parents[1]


def run_main(workdir, *overrides):
    command = [
        sys.executable, "-m", "mmtx.main", "--config=configs/base.py:tiny",
        f"--workdir={workdir}", "--config.train.batch_size=8", "--config.eval.batch_size=8",
        "--config.data.eval_size=8", "--config.model.text.max_length=32",
        "--config.train.log_every=1", *overrides,
    ]  # fmt: skip
    # The subprocesses share the test session's persistent compilation cache (conftest.py),
    # so the rerun does not compile again.
    env = dict(
        os.environ,
        JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir,
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )
    return subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False
    )


def readme_eval_metrics() -> set[str]:
    """The metric names of the README's shown ``eval at step 560`` line (make train's)."""
    readme = (REPO / "README.md").read_text()
    (line,) = [row for row in readme.splitlines() if row.startswith("eval at step 560 (")]
    return set(re.findall(r"'([\w@]+)': ", line))


def test_command_line_trains_with_overrides_and_resumes(tmp_path):
    result = run_main(tmp_path, "--config.train.steps=2", "--config.fusion.type=gated")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "step 2/2" in result.stdout and "final:" in result.stdout
    # Says what it does, once per line, without library INFO logs.
    assert "computing in float32; 1 x cpu (cpu)" in result.stdout
    assert "training from step 0 to 2" in result.stdout
    assert "compiling the train step..." in result.stdout
    assert result.stdout.count("step 2/2") == 1
    assert "checkpoint_manager.py" not in result.stderr + result.stdout
    with open(os.path.join(tmp_path, "config.json")) as f:
        saved = json.load(f)
    assert saved["train"]["steps"] == 2 and saved["fusion"]["type"] == "gated"
    with open(os.path.join(tmp_path, "summary.json")) as f:
        summary = json.load(f)
    assert summary["step"] == 2
    # The README shows this config's eval line (configs/base.py, full size): the same metrics,
    # and it names them as the run does.
    from mmtx.evaluate.headline import headline

    assert set(headline(summary["eval"])) == readme_eval_metrics()
    assert set(re.findall(r"'([\w@]+)': ", result.stdout.split("eval at step 2 (")[1])) == (
        readme_eval_metrics()
    )

    again = run_main(tmp_path, "--config.train.steps=3", "--config.fusion.type=gated")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from checkpoint at step 2" in again.stdout
    assert "config changes since that checkpoint: train.steps: 2 -> 3" in again.stdout
    assert "step 3/3" in again.stdout
    with open(os.path.join(tmp_path, "summary.json")) as f:
        trained = json.load(f)
    assert trained["steps_per_second"] > 0 and trained["device_count"] == 1

    # A finished run's rerun trains nothing, says so, and keeps the summary's figures.
    rerun = run_main(tmp_path, "--config.train.steps=3", "--config.fusion.type=gated")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "nothing left to train: step 3 of train.steps=3 is done" in rerun.stdout
    assert "eval at step 3 (recorded in evals.json)" in rerun.stdout
    with open(os.path.join(tmp_path, "summary.json")) as f:
        again_summary = json.load(f)
    assert again_summary["steps_per_second"] == trained["steps_per_second"]
    assert again_summary["eval"] == trained["eval"]

    # Another optimizer structure: one clean error line, exit 1, the checkpoints untouched.
    changed = run_main(
        tmp_path,
        "--config.train.steps=4",
        "--config.fusion.type=gated",
        "--config.train.grad_clip=0",
    )
    assert changed.returncode == 1, changed.stderr[-3000:]
    assert "error: the checkpoint was made by a different optimizer config" in changed.stderr
    assert "train.grad_clip: 1.0 -> 0.0" in changed.stderr and "Traceback" not in changed.stderr
    assert sorted(os.listdir(os.path.join(tmp_path, "checkpoints"))) == ["2", "3"]

    # Errors after orbax has started are one line too: an init_from that does not fit, and
    # --eval_only on a directory that does not exist (which is not created).
    source = tmp_path
    init = run_main(
        tmp_path / "init",
        f"--config.train.init_from={source}",
        "--config.fusion.type=gated",
        "--config.model.embed_dim=24",
    )
    assert init.returncode == 2, init.stderr[-3000:]
    (line,) = error_lines(init.stderr)
    assert line.startswith(f"error: config.train.init_from='{source}': ") and (
        "in the source but" in line
    ), init.stderr
    evaluated = run_main(tmp_path / "typo", "--eval_only")
    assert evaluated.returncode == 1
    assert error_lines(evaluated.stderr) == [
        f"error: no such workdir: {tmp_path / 'typo'} (nothing to evaluate)"
    ]
    assert not (tmp_path / "typo").exists()


def error_lines(stderr):
    """stderr without the host-malloc restart notice (mmtx.launch)."""
    return [line for line in stderr.splitlines() if not line.startswith("mmtx: restarting")]


def test_bad_override_is_a_clear_error(tmp_path):
    result = run_main(tmp_path, "--config.train.stpes=2")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        'error: unknown config field --config.train.stpes; did you mean "steps" instead of "stpes"?'
    )
    assert "Traceback" not in result.stderr


def test_json_configs_and_comma_lists_on_the_command_line(tmp_path):
    """Both reach the config (shown by the errors they lead to, so nothing is compiled)."""
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"model": {"embed_dim": 16}, "train": {"steps": 0}}))
    result = run_main(tmp_path / "a", f"--config={path}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "error: config.train.steps: must be > 0; got 0"

    path.write_text(json.dumps({"model": {"embed_dim": 16, "text": {"widht": 3}}}))
    result = run_main(tmp_path / "b", f"--config={path}")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {path}: unknown config key 'model.text.widht'; did you mean 'model.text.width'?"
    )

    result = run_main(tmp_path / "c", "--config.model.modalities=text,imag")
    assert result.returncode == 2
    assert "config.model.modalities: unknown modality 'imag'" in result.stderr


# A config file whose contents run Python: executing it leaves MARKER beside it.
PAYLOAD = """
import pathlib
pathlib.Path(__file__).with_name("MARKER").write_text("executed")
def get_config(arg=None):
    raise SystemExit("executed")
"""


def test_only_py_config_files_are_executed_whatever_the_spelling(tmp_path):
    """--config=F, --config F, upper case, :arg and a flagfile: a file that is not .py is read
    as JSON and refused with the JSON error's line and column; nothing is executed."""
    for name in ("x.json", "X.JSON", "x.txt"):
        (tmp_path / name).write_text(PAYLOAD)
    (tmp_path / "flags.txt").write_text(f"--config={tmp_path / 'x.json'}\n")
    spellings = {
        "equals": [f"--config={tmp_path / 'x.json'}"],
        "space": ["--config", str(tmp_path / "x.json")],
        "upper case": [f"--config={tmp_path / 'X.JSON'}"],
        "arg": [f"--config={tmp_path / 'x.json'}:arg"],
        "single dash": [f"-config={tmp_path / 'x.txt'}"],
        "flagfile": [f"--flagfile={tmp_path / 'flags.txt'}"],
    }
    processes = {
        spelling: subprocess.Popen(
            [sys.executable, "-m", "mmtx.main", *argv, f"--workdir={tmp_path / 'w'}"],
            cwd=REPO,
            env=dict(os.environ, MMTX_HOST_MALLOC="default"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for spelling, argv in spellings.items()
    }
    for spelling, process in processes.items():
        _, err = process.communicate(timeout=300)
        lines = err.strip().splitlines()
        assert process.returncode == 2, (spelling, err[-2000:])
        assert len(lines) == 1 and lines[0].startswith("error: "), (spelling, err[-2000:])
        if spelling == "arg":
            assert "only a Python (.py) config takes ':arg'" in lines[0]
        else:
            assert "not valid JSON (line 2, column 1: Expecting value)" in lines[0], lines
    assert not (tmp_path / "MARKER").exists()
    assert not (tmp_path / "w").exists()


def test_malformed_json_config_is_one_line_with_its_position(tmp_path):
    path = tmp_path / "run.json"
    path.write_text('{"train": {\n  "steps": 3,\n}}\n')
    result = run_main(tmp_path / "w", f"--config={path}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1:] == [
        f"error: {path}: not valid JSON (line 3, column 1: Expecting property name enclosed "
        "in double quotes); a config file is read as JSON unless its name ends in .py"
    ]


CUSTOM_FUSION_CONFIG = """
import flax.linen as nn
from mmtx import config as config_lib
from mmtx.fusion import register_fusion


class MeanFusion(nn.Module):
    width: int
    dtype: object = None
    param_dtype: object = None

    @nn.compact
    def __call__(self, features, train=False):
        pooled = [nn.Dense(self.width)(f.pooled) for f in features.values()]
        return sum(pooled) / len(pooled), {}


register_fusion("mean_of_pooled", MeanFusion)


def get_config(arg=None):
    config = config_lib.apply_variant(config_lib.default_config(), "tiny")
    config.fusion.type = "mean_of_pooled"
    return config
"""


def test_a_config_file_can_register_a_custom_fusion(tmp_path):
    """The fusion registered by the config file passes validation in the CLI process (the run
    then stops at the next check, a foreign workdir, before anything is compiled)."""
    path = tmp_path / "my_config.py"
    path.write_text(CUSTOM_FUSION_CONFIG)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "theirs.txt").write_text("x")
    result = subprocess.run(
        [sys.executable, "-m", "mmtx.main", f"--config={path}", f"--workdir={foreign}"],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    assert "was not made by mmtx" in result.stderr and "fusion.type" not in result.stderr


def test_closed_event_loop_noise_is_dropped_and_other_errors_are_not():
    """tensorstore reports a write that completes after orbax closed a failed save's event
    loop through sys.excepthook, from C: a traceback of asyncio frames alone."""
    import asyncio

    from mmtx import main

    printed = []
    hook = main._without_closed_loop_noise(lambda *args: printed.append(args[1]))
    loop = asyncio.new_event_loop()
    loop.close()
    try:
        loop.call_soon_threadsafe(print)
    except RuntimeError as error:
        hook(RuntimeError, error, error.__traceback__.tb_next)  # as called from C
        assert printed == []
        hook(RuntimeError, error, error.__traceback__)  # raised from Python code: shown
        assert printed == [error]
        unraisable = main._unraisable_without_closed_loop_noise(printed.append)
        from_c = types.SimpleNamespace(
            exc_type=RuntimeError, exc_value=error, exc_traceback=error.__traceback__.tb_next
        )
        unraisable(from_c)  # PyErr_WriteUnraisable from a C callback: dropped
        assert printed == [error]
        unraisable(
            other := types.SimpleNamespace(
                exc_type=KeyError, exc_value=KeyError(), exc_traceback=None
            )
        )
        assert printed == [error, other]


def test_a_mistyped_flag_or_field_is_reported_before_jax_is_imported():
    """The malloc restart (mmtx.launch) comes before the heavy imports, and a mistyped flag
    or config field is reported before jax is imported at all (mmtx.config imports no jax;
    main() imports the training side after the flags parse). ``import mmtx`` alone imports
    no jax."""
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "MMTX_HOST_MALLOC")}
    for flag in ("--bogus_flag=1", "--config.model.bogus=1"):
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "mmtx.main",
             "--config=configs/base.py", flag],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert result.returncode == 2
        assert "mmtx: restarting with GLIBC_TUNABLES=" in result.stderr
        assert re.search(r"^error: .*bogus", result.stderr, re.M), result.stderr[-2000:]
        assert not re.findall(r"\|\s+(jax|flax)$", result.stderr, re.M), result.stderr[-2000:]
    light = subprocess.run(
        [sys.executable, "-c", "import sys, mmtx; print('jax' in sys.modules)"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    assert light.stdout.strip() == "False"
