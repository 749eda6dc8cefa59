"""Tests for mmtx/train/loop.py: a tiny config trains end to end, logs, and resumes."""

import json
import os
import re

import jax
import numpy as np
import pytest
from nan_worker import loss_nan_at_step

from mmtx import Model, create_model
from mmtx import config as config_lib
from mmtx.data.synthetic import SyntheticSource
from mmtx.train.checkpoint import Checkpointer
from mmtx.train.evaluate_checkpoint import evaluate_checkpoint
from mmtx.train.loop import train_and_evaluate
from mmtx.train.metrics import read_scalars
from mmtx.train.workdir import WorkdirError


def tiny_config(steps: int):
    config = config_lib.apply_variant(config_lib.default_config(), "tiny")
    config.model.text.max_length = 32
    config.train.steps = steps
    config.train.batch_size = 8
    config.train.learning_rate = 3e-3
    config.train.warmup_steps = 2
    config.train.log_every = 1
    config.train.eval_every = 1000
    config.train.checkpoint_every = 4
    config.eval.batch_size = 16
    config.data.eval_size = 24
    return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run"))
    summary = train_and_evaluate(tiny_config(steps=16), workdir)
    return workdir, summary


def test_leaves_config_summary_events_and_checkpoints(trained):
    workdir, summary = trained
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["train"]["steps"] == 16
    with open(os.path.join(workdir, "summary.json")) as f:
        assert json.load(f) == summary
    assert summary["step"] == 16 and summary["eval"]["num_examples"] == 24
    for key in ("accuracy", "text_to_image_recall@1", "audio_to_text_recall@5"):
        assert 0.0 <= summary["eval"][key] <= 1.0
    assert sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints"))) == [8, 12, 16]


def test_model_from_checkpoint_runs_on_raw_inputs(trained):
    workdir, _ = trained
    model = Model.from_checkpoint(workdir)
    source = SyntheticSource("eval", size=2)
    example = source[0]
    outputs = model(
        text_inputs=[example["caption"], source[1]["caption"]],
        image_features=np.stack([example["image"], source[1]["image"]]),
        audio_inputs=np.stack([example["audio"], source[1]["audio"]]),
    )
    assert outputs["fused"].shape == (2, 32) and outputs["logits"].shape == (2, 64)
    # The restored params are the trained ones, not a fresh init.
    fresh = create_model(model.config)
    assert not np.allclose(
        fresh.params["classifier"]["kernel"], model.params["classifier"]["kernel"]
    )


def test_loss_falls(trained):
    workdir, _ = trained
    losses = [value for _, value in read_scalars(workdir)["train/loss"]]
    assert len(losses) == 16
    assert np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.1


def test_tflops_and_mfu_are_logged_and_summarised(trained, tmp_path, capsys):
    workdir, summary = trained
    scalars = read_scalars(workdir)
    for tag in ("train/tflops_per_device", "train/mfu"):
        assert len(scalars[tag]) == 16 and all(value > 0 for _, value in scalars[tag])
    assert summary["flops_per_step"] > 0 and summary["peak_flops_per_device"] > 0
    assert 0 < summary["mfu"] < 1 and summary["tflops_per_device"] > 0
    # A configured peak is used as given and shows in the progress line.
    config = tiny_config(steps=2)
    config.train.peak_flops = 1e9
    summary = train_and_evaluate(config, str(tmp_path / "run"))
    assert summary["peak_flops_per_device"] == 1e9
    out = capsys.readouterr().out
    assert "TFLOP/s per device (config.train.peak_flops)" in out
    assert re.search(r"step 2/2 .* \| loss=\S+ .*\| \S+ TFLOP/s/device MFU \d+\.\d\d", out), out


class Preempted(Exception):
    pass


def test_rerun_resumes_and_matches_uninterrupted_run(trained, tmp_path, capsys, monkeypatch):
    reference_dir, _ = trained
    workdir = str(tmp_path)
    original_save = Checkpointer.save

    def save_then_stop(self, step, *args, **kwargs):
        saved = original_save(self, step, *args, **kwargs)
        if step == 8:
            self.wait()
            raise Preempted
        return saved

    with monkeypatch.context() as patch:
        patch.setattr(Checkpointer, "save", save_then_stop)
        with pytest.raises(Preempted):
            train_and_evaluate(tiny_config(steps=16), workdir)
    capsys.readouterr()
    summary = train_and_evaluate(tiny_config(steps=16), workdir)
    assert "resumed from checkpoint at step 8" in capsys.readouterr().out
    assert summary["steps_this_run"] == 8

    def final_params(directory):
        checkpointer = Checkpointer(os.path.join(directory, "checkpoints"), read_only=True)
        state, step = checkpointer.restore_arrays()
        checkpointer.close()
        assert step == 16
        return state["params"]

    # Same data order, same RNG, same step: the resumed run ends where the uninterrupted one does.
    jax.tree.map(np.testing.assert_array_equal, final_params(workdir), final_params(reference_dir))


def run_until(config, workdir, stop_step, monkeypatch):
    """Trains ``config`` in ``workdir`` but stops right after the checkpoint at ``stop_step``
    commits, as a killed run would."""
    original_save = Checkpointer.save

    def save_then_stop(self, step, *args, **kwargs):
        saved = original_save(self, step, *args, **kwargs)
        if step == stop_step:
            self.wait()
            raise Preempted
        return saved

    with monkeypatch.context() as patch:
        patch.setattr(Checkpointer, "save", save_then_stop)
        with pytest.raises(Preempted):
            train_and_evaluate(config, workdir)


def restored_params(workdir, step=None):
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True)
    try:
        state, restored_step = checkpointer.restore_arrays(step)
    finally:
        checkpointer.close()
    return state, restored_step


def test_truncated_latest_checkpoint_is_set_aside_for_the_previous_one(
    trained, tmp_path, capsys, monkeypatch
):
    reference_dir, _ = trained
    workdir = str(tmp_path)
    run_until(tiny_config(steps=16), workdir, 12, monkeypatch)
    # Damage every data file of the newest checkpoint (step 12), as a full disk would.
    damaged = 0
    for root, _, files in os.walk(os.path.join(workdir, "checkpoints", "12", "state")):
        for name in files:
            path = os.path.join(root, name)
            if os.path.basename(root) == "d":
                with open(path, "r+b") as f:
                    f.truncate(os.path.getsize(path) // 2)
                damaged += 1
    assert damaged
    capsys.readouterr()
    summary = train_and_evaluate(tiny_config(steps=16), workdir)
    assert "resumed from checkpoint at step 8" in capsys.readouterr().out
    assert summary["steps_this_run"] == 8
    assert os.path.isdir(os.path.join(workdir, "checkpoints_corrupt", "12"))
    jax.tree.map(
        np.testing.assert_array_equal,
        restored_params(workdir)[0]["params"],
        restored_params(reference_dir)[0]["params"],
    )


def test_checkpoint_of_another_model_names_the_param_and_both_shapes(trained, tmp_path):
    import shutil

    from mmtx.train.checkpoint import CheckpointMismatchError

    workdir = str(tmp_path / "copy")
    shutil.copytree(trained[0], workdir)
    config = tiny_config(steps=20)
    config.model.audio.width = 64
    with pytest.raises(CheckpointMismatchError) as error:
        train_and_evaluate(config, workdir)
    message = str(error.value)
    assert "params/audio/" in message
    assert "(32,)" in message or "32)" in message
    assert "64" in message and "different model config" in message


def test_a_changed_optimizer_on_resume_moves_nothing_and_keeps_config_json(trained, tmp_path):
    """Resuming with grad_clip=0 used to set every checkpoint aside as unreadable (a later run
    then deleted them) and to rewrite config.json before the checkpoint was checked."""
    import shutil

    from mmtx.train.checkpoint import CheckpointMismatchError

    workdir = str(tmp_path / "copy")
    shutil.copytree(trained[0], workdir)
    with open(os.path.join(workdir, "config.json")) as f:
        config_json = f.read()
    config = tiny_config(steps=20)
    config.train.grad_clip = 0.0
    with pytest.raises(CheckpointMismatchError, match=r"train\.grad_clip: 1\.0 -> 0\.0"):
        train_and_evaluate(config, workdir)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["12", "16", "8"]
    assert not os.path.exists(os.path.join(workdir, "checkpoints_corrupt"))
    with open(os.path.join(workdir, "config.json")) as f:
        assert f.read() == config_json
    assert Model.from_checkpoint(workdir).step == 16


def test_eval_only_evaluates_the_newest_checkpoint_without_training(trained, tmp_path):
    import shutil

    from mmtx.train.workdir import read_evals

    workdir = str(tmp_path / "copy")
    shutil.copytree(trained[0], workdir)
    config = tiny_config(steps=40)  # not trained on: eval_only ignores train.steps
    config.data.eval_size = 16
    summary = evaluate_checkpoint(config, workdir)
    assert summary["step"] == 16 and summary["steps_this_run"] == 0
    assert summary["eval"]["num_examples"] == 16 and read_evals(workdir)[16]["num_examples"] == 16
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["12", "16", "8"]
    assert summary["steps_per_second"] == trained[1]["steps_per_second"]  # kept from training


def test_a_foreign_or_busy_workdir_is_refused_before_anything_is_written(tmp_path):
    from mmtx.train.workdir import WorkdirError

    foreign = tmp_path / "foreign"
    (foreign / "checkpoints" / "1000").mkdir(parents=True)
    (foreign / "summary.json").write_text("theirs")
    with pytest.raises(WorkdirError, match="was not made by mmtx"):
        train_and_evaluate(tiny_config(steps=2), str(foreign))
    assert sorted(os.listdir(foreign)) == ["checkpoints", "summary.json"]

    from test_workdir import hold_lock

    from mmtx.train.workdir import claim

    busy = str(tmp_path / "busy")
    claim(busy)
    holder = hold_lock(busy)
    try:
        with pytest.raises(WorkdirError, match=f"in use by pid {holder.pid}"):
            train_and_evaluate(tiny_config(steps=2), busy)
    finally:
        holder.kill()
        holder.wait()
    assert not os.path.exists(os.path.join(busy, "config.json"))


def test_an_eval_cut_short_is_run_on_resume(tmp_path, capsys, monkeypatch):
    """The step's checkpoint precedes its eval, so a run killed during the eval used to skip
    that eval for good when resumed."""
    from mmtx.evaluate import evaluator as evaluator_lib
    from mmtx.train.workdir import read_evals

    config = tiny_config(steps=8)
    config.train.eval_every = 8
    workdir = str(tmp_path)

    def killed(*args, **kwargs):
        raise Preempted

    with monkeypatch.context() as patch:
        patch.setattr(evaluator_lib, "evaluate", killed)
        with pytest.raises(Preempted):
            train_and_evaluate(config, workdir)
    assert read_evals(workdir) == {}
    capsys.readouterr()
    summary = train_and_evaluate(config, workdir)
    out = capsys.readouterr().out
    assert "resumed from checkpoint at step 8" in out
    assert "evaluating step 8, which the interrupted run did not finish" in out
    assert summary["steps_this_run"] == 0 and out.count("eval at step 8") == 1
    assert read_evals(workdir)[8]["accuracy"] == summary["eval"]["accuracy"]


def test_nonfinite_skip_leaves_the_state_unchanged_and_counts_the_step(tmp_path):
    config = tiny_config(steps=5)
    config.train.nonfinite = "skip"
    config.train.checkpoint_every = 1
    config.train.keep_checkpoints = 10
    # Attribute heads (user-named config entries) must survive config.json for from_checkpoint.
    config.model.attribute_classes = {"shape": 4}
    config.model.attribute_modalities = {"image": ("shape",)}
    workdir = str(tmp_path)
    summary = train_and_evaluate(config, workdir, loss_fn=loss_nan_at_step(config, 3))
    assert summary["nonfinite_steps"] == [3] and summary["step"] == 5
    assert Model.from_checkpoint(workdir).module.attribute_heads["image"]["shape"] == 4
    flags = dict(read_scalars(workdir)["train/nonfinite"])
    assert flags[3] == 1.0 and all(flags[s] == 0.0 for s in (1, 2, 4, 5))
    before, _ = restored_params(workdir, 2)
    after, _ = restored_params(workdir, 3)
    jax.tree.map(np.testing.assert_array_equal, after["params"], before["params"])
    jax.tree.map(np.testing.assert_array_equal, after["opt_state"], before["opt_state"])
    final, _ = restored_params(workdir, 5)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(final["params"]))


def test_nonfinite_stop_raises_naming_the_step_and_saves_nothing_after_it(tmp_path):
    from mmtx.train.loop import NonFiniteError

    config = tiny_config(steps=8)
    config.train.checkpoint_every = 1
    workdir = str(tmp_path)
    message = "non-finite loss, gradients or updated params at step 3"
    with pytest.raises(NonFiniteError, match=message):
        train_and_evaluate(config, workdir, loss_fn=loss_nan_at_step(config, 3))
    assert restored_params(workdir)[1] == 2


def test_ema_is_evaluated_checkpointed_and_loadable(tmp_path):
    config = tiny_config(steps=4)
    config.train.ema_decay = 0.9
    config.train.eval_every = 4
    workdir = str(tmp_path / "ema")
    summary = train_and_evaluate(config, workdir)
    assert "ema/text_to_image_recall@1" in summary["eval"]
    with open(os.path.join(workdir, "evals.json")) as f:
        assert "ema/image_to_text_recall@1" in json.load(f)["4"]
    raw, ema = Model.from_checkpoint(workdir), Model.from_checkpoint(workdir, ema=True)
    assert raw.step == ema.step == 4
    differs = jax.tree.map(lambda a, b: bool(np.any(a != b)), raw.params, ema.params)
    assert any(jax.tree.leaves(differs))


def test_ema_true_on_a_run_without_ema_is_an_error(trained):
    workdir, _ = trained
    with pytest.raises(ValueError, match="holds no EMA params"):
        Model.from_checkpoint(workdir, ema=True)


def test_eval_only_never_creates_or_claims_a_workdir(tmp_path):
    missing = tmp_path / "typo"
    with pytest.raises(WorkdirError, match=re.escape(f"no such workdir: {missing}")):
        evaluate_checkpoint(tiny_config(2), str(missing))
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WorkdirError, match=r"no checkpoint in .*empty to evaluate"):
        evaluate_checkpoint(tiny_config(2), str(empty))
    assert os.listdir(empty) == []  # no marker, lock or checkpoints/ left behind


def test_a_run_that_fails_before_its_first_checkpoint_removes_the_workdir_it_made(tmp_path):
    config = tiny_config(steps=2)
    config.data.source = f"csv:{tmp_path / 'missing.csv'}"
    new = tmp_path / "run"
    with pytest.raises(FileNotFoundError, match=r"missing\.csv"):
        train_and_evaluate(config_lib.validate(config), str(new))
    assert not new.exists()
    # A workdir it did not make (here: one already claimed) is left as it was.
    from mmtx.train.workdir import MARKER, claim

    claim(str(new))
    with pytest.raises(FileNotFoundError, match=r"missing\.csv"):
        train_and_evaluate(config_lib.validate(config), str(new))
    assert MARKER in os.listdir(new)
