"""Tests for mmtx/train/loop.py: a tiny config trains end to end, logs, and resumes."""

import json
import os

import jax
import numpy as np
import pytest

from mmtx import Model, create_model
from mmtx import config as config_lib
from mmtx.data.synthetic import SyntheticSource
from mmtx.train.checkpoint import Checkpointer
from mmtx.train.loop import train_and_evaluate
from mmtx.train.metrics import read_scalars


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
