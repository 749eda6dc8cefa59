"""Tests for python -m mmtx.evaluate (mmtx/evaluate/command.py), as a user runs it: an
imported CLIP workdir (tokenizer kept inside) evaluated zero-shot and by retrieval without
training, the metrics written to summary.json, evals.json and TensorBoard; errors are one
line (exit 1, 2 for flags)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys

import pytest
import safetensors.numpy
from synthetic_checkpoints import open_clip_state_dict

from mmtx import Model
from mmtx.data.pipeline import create_dataset
from mmtx.data.synthetic import CLASS_NAMES
from mmtx.evaluate import zero_shot_accuracy, zero_shot_classifier
from mmtx.evaluate.command import main
from mmtx.import_checkpoint import main as import_main
from mmtx.train.metrics import read_scalars

TOKENIZERS = os.path.join(os.path.dirname(__file__), "data", "fixtures", "tokenizers")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVAL_FLAGS = ("--config.data.eval_size=16", "--config.eval.batch_size=8")


def command(*args: str) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main(["mmtx.evaluate", *args], stderr=stderr)
    return status, stdout.getvalue(), stderr.getvalue()


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """An open_clip checkpoint (random weights, 32 px images) imported with CLIP's tokenizer."""
    path = tmp_path_factory.mktemp("imported")
    with open(os.path.join(TOKENIZERS, "reference.json")) as f:
        reference = json.load(f)["clip_bpe"]
    weights = str(path / "clip.safetensors")
    state = open_clip_state_dict(vocab=reference["vocab_size"], context=16, grid=4, patch=8)
    safetensors.numpy.save_file(state, weights)
    workdir = str(path / "clip")
    with contextlib.redirect_stdout(io.StringIO()):
        status = import_main(
            [
                "mmtx.import_checkpoint",
                "--family=open_clip",
                f"--path={weights}",
                f"--workdir={workdir}",
                f"--tokenizer={os.path.join(TOKENIZERS, reference['file'])}",
            ],
            stderr=io.StringIO(),
        )
    assert status == 0
    return workdir


def test_evaluates_an_imported_model_zero_shot_and_writes_the_metrics(imported):
    with open(os.path.join(imported, "config.json")) as f:
        config_before = json.load(f)
    status, out, err = command(f"--workdir={imported}", *EVAL_FLAGS)
    assert status == 0, err
    assert "evaluating step 0 only (eval_only)" in out
    assert "evaluated step 0: " in out
    # One result block: the metrics are printed once, and nothing speaks of training.
    assert [line for line in out.splitlines() if "image_zero_shot_top1" in line] == [
        line for line in out.splitlines() if line.startswith("evaluated step 0: ")
    ]
    assert "final:" not in out and "trained 0 steps" not in out
    with open(os.path.join(imported, "summary.json")) as f:
        summary = json.load(f)
    metrics = summary["eval"]
    assert summary["step"] == 0 and summary["steps_this_run"] == 0
    expected = {"image_zero_shot_top1", "image_zero_shot_top5", "text_to_image_recall@1"}
    assert expected <= set(metrics) and metrics["num_examples"] == 16
    with open(os.path.join(imported, "evals.json")) as f:
        assert set(json.load(f)["0"]) == set(metrics)
    scalars = read_scalars(imported)
    assert scalars["eval/image_zero_shot_top1"] == [
        (0, pytest.approx(metrics["image_zero_shot_top1"]))
    ]
    # config.json keeps the tokenizer named relative to the workdir; only the overrides change.
    with open(os.path.join(imported, "config.json")) as f:
        config_after = json.load(f)
    assert config_after["tokenizer"]["model_file"] == config_before["tokenizer"]["model_file"]
    assert not os.path.isabs(config_after["tokenizer"]["model_file"])
    assert config_after["data"]["eval_size"] == 16

    # The same accuracy from Model.from_checkpoint, the classifier built with zero_shot_classifier.
    model = Model.from_checkpoint(imported)
    classifier = zero_shot_classifier(model, CLASS_NAMES, model.config.eval.zero_shot_templates)
    model.config.data.eval_size = 16
    batches = create_dataset(model.config, "eval", model.tokenizer, batch_size=16, train=False)
    batch = next(iter(batches))
    images = model.run({"image": batch["image"]})["image"]
    accuracy = zero_shot_accuracy(images, batch["label"], classifier)
    assert metrics["image_zero_shot_top1"] == pytest.approx(round(accuracy[1], 4))
    assert metrics["image_zero_shot_top5"] == pytest.approx(round(accuracy[5], 4))


def test_eval_overrides_apply_and_a_rerun_replaces_the_record(imported):
    status, _out, err = command(
        f"--workdir={imported}", *EVAL_FLAGS, "--config.eval.zero_shot=false"
    )
    assert status == 0, err
    with open(os.path.join(imported, "evals.json")) as f:
        evals = json.load(f)
    assert list(evals) == ["0"] and "image_zero_shot_top1" not in evals["0"]
    status, _, err = command(
        f"--workdir={imported}",
        *EVAL_FLAGS,
        "--config.eval.zero_shot_templates=('a {} shape', 'a photo of a {}')",
    )
    assert status == 0, err
    with open(os.path.join(imported, "config.json")) as f:
        templates = json.load(f)["eval"]["zero_shot_templates"]
    assert templates == ["a {} shape", "a photo of a {}"]


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        ((), 2, "--workdir=DIR is required"),
        (("--workdir=/nonexistent/run",), 1, "no such directory"),
        (("--workdir={empty}",), 1, "has no config.json"),
        (("--workdir={imported}", "--config.eval.batchsize=8"), 2, 'did you mean "batch_size"'),
        (("--workdir={imported}", "--bogus"), 2, "bogus"),
        (("--workdir={imported}", "extra"), 2, "unexpected arguments"),
        (
            ("--workdir={imported}", "--config.eval.zero_shot_templates=no slot"),
            2,
            "config.eval.zero_shot_templates",
        ),
        (("--workdir={imported}", "--config.eval.batch_size=0"), 2, "config.eval.batch_size"),
    ],
)
def test_errors_are_one_line(imported, tmp_path, args, status, message):
    empty = tmp_path / "empty"
    empty.mkdir()
    args = [a.format(imported=imported, empty=empty) for a in args]
    got, _out, err = command(*args)
    assert got == status, err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def test_a_workdir_without_a_checkpoint_is_one_line(tmp_path, imported):
    workdir = tmp_path / "run"
    workdir.mkdir()
    for name in ("config.json", "mmtx-workdir.json", "tokenizer"):  # all but checkpoints/
        copy = shutil.copytree if name == "tokenizer" else shutil.copyfile
        copy(os.path.join(imported, name), workdir / name)
    status, _, err = command(f"--workdir={workdir}", *EVAL_FLAGS)
    assert status == 1 and err.startswith("error: ") and "no checkpoint" in err, err
    # Nothing was created or claimed: no checkpoints/, no lock.
    assert sorted(os.listdir(workdir)) == ["config.json", "mmtx-workdir.json", "tokenizer"]


def test_python_dash_m_runs_the_command():
    result = subprocess.run(
        [sys.executable, "-m", "mmtx.evaluate", "--workdir=/nonexistent/run"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: --workdir: no such directory: /nonexistent/run"
    ]
