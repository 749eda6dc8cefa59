"""Training runs on your own data, as a user runs them (`python -m mmtx.main` in subprocesses):
a CSV of images and captions learns retrieval well above chance with its bad rows skipped and
counted; WebDataset shards with damaged members train through a kill -9 to the params of an
uninterrupted run; past data.max_bad_fraction the run stops with one clear error and keeps its
checkpoints."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys

import pytest
from own_data import bomb_png, write_csv_dataset
from test_fault_tolerance import (
    assert_params_equal,
    environment,
    final_params,
    saved_steps,
    wait_for,
)

from mmtx.data import pack
from mmtx.train.checkpoint import Checkpointer

REPO = pathlib.Path(__file__).resolve().parents[2]


def main_command(config, workdir, *overrides):
    return [sys.executable, "-m", "mmtx.main", f"--config={config}", f"--workdir={workdir}",
            *overrides]  # fmt: skip


def run(config, workdir, *overrides):
    return subprocess.run(
        main_command(config, workdir, *overrides),
        cwd=REPO,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def add_bad_rows(csv_path, directory, at=5):
    """Puts a missing file, an undecodable JPEG, a decompression bomb and an empty caption
    among the CSV's rows (after row ``at``)."""
    with open(os.path.join(directory, "broken.jpg"), "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 cut short")
    with open(os.path.join(directory, "bomb.png"), "wb") as f:
        f.write(bomb_png())
    lines = open(csv_path).read().splitlines()
    first_image = lines[1].split("\t")[0]
    bad = ["gone.jpg\ta missing file", "broken.jpg\ta broken jpeg", "bomb.png\ta huge png",
           f"{first_image}\t "]  # fmt: skip
    with open(csv_path, "w") as f:
        f.write("\n".join(lines[: at + 1] + bad + lines[at + 1 :]) + "\n")


def test_csv_trains_retrieval_well_above_chance_skipping_bad_rows(tmp_path):
    csv_path = write_csv_dataset(str(tmp_path / "data"), 800, image_size=32)
    add_bad_rows(csv_path, str(tmp_path / "data"))
    holdout = 200
    result = run(
        "configs/csv_image_text.py", tmp_path / "run",
        f"--config.data.source=csv:{csv_path}", f"--config.data.holdout={holdout}",
        "--config.train.steps=120", "--config.train.eval_every=120",
        "--config.train.log_every=40", "--config.train.batch_size=48",
        "--config.eval.batch_size=100", "--config.model.image.image_size=32",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    chance = 1 / holdout
    recall = summary["eval"]
    # 2,000 rows and 400 steps reach 66-69x chance (docs/own_data.md); this shorter run, 5x.
    assert recall["text_to_image_recall@1"] > 5 * chance, recall
    assert recall["image_to_text_recall@1"] > 5 * chance, recall
    assert set(summary["skipped"]) == {
        "missing file", "undecodable image", "image too large", "empty caption",
    }  # fmt: skip
    assert "| skipped " in result.stdout and "missing file" in result.stdout
    assert f"evaluating on the last {holdout} examples" in result.stdout


STEPS, EVERY = 40, 5


def wds_overrides(shards):
    return [
        f"--config.data.source=wds:{shards}", "--config.data.num_workers=1",
        "--config.data.shuffle_buffer=16", "--config.model.image.image_size=32",
        "--config.data.max_bad_fraction=0.2",
        "--config.train.batch_size=8", f"--config.train.steps={STEPS}",
        f"--config.train.checkpoint_every={EVERY}", "--config.train.log_every=5",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def damaged_shards(tmp_path_factory):
    """Shards of 48 examples, 8 per shard, one truncated and one with a corrupt image."""
    directory = tmp_path_factory.mktemp("wds")
    csv_path = write_csv_dataset(str(directory / "data"), 48, image_size=32)
    lines = open(csv_path).read().splitlines()
    with open(directory / "data" / "images" / "corrupt.jpg", "wb") as f:
        f.write(b"\xff\xd8 garbage")
    lines[3] = "images/corrupt.jpg\ta corrupt image"
    open(csv_path, "w").write("\n".join(lines) + "\n")
    shards = directory / "shards"
    pack.pack(f"csv:{csv_path}", f"wds:{shards}", shard_size=8)
    last = shards / "00005.tar"
    last.write_bytes(last.read_bytes()[:5000])
    return shards


def test_wds_kill_9_and_resume_equals_an_uninterrupted_run(tmp_path, damaged_shards):
    config = "configs/wds_image_text.py:tiny"
    whole = run(config, tmp_path / "whole", *wds_overrides(damaged_shards))
    assert whole.returncode == 0, whole.stderr[-3000:]
    summary = json.loads((tmp_path / "whole" / "summary.json").read_text())
    assert set(summary["skipped"]) == {"undecodable image", "truncated tar"}
    assert "no evaluation: wds:" in whole.stdout

    workdir = tmp_path / "killed"
    process = subprocess.Popen(
        main_command(config, workdir, *wds_overrides(damaged_shards)),
        cwd=REPO, env=environment(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert wait_for(lambda: len(saved_steps(workdir)) >= 3, process), "no checkpoints"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    killed_at = max(saved_steps(workdir))
    if killed_at >= STEPS:
        pytest.skip("the run finished before the kill landed (machine too fast)")
    resumed = run(config, workdir, *wds_overrides(damaged_shards))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from checkpoint" in resumed.stdout
    assert_params_equal(final_params(workdir, STEPS), final_params(tmp_path / "whole", STEPS))
    again = json.loads((workdir / "summary.json").read_text())
    assert again["skipped"] == summary["skipped"]  # the counts resume with the position


def test_too_much_bad_data_stops_with_one_error_and_keeps_checkpoints(tmp_path):
    csv_path = write_csv_dataset(str(tmp_path / "data"), 120, image_size=32)
    lines = open(csv_path).read().splitlines()
    # Every other row's file missing from row 60 on: the bad fraction climbs past 0.2.
    lines = (
        lines[:61]
        + [line if i % 2 else f"gone_{i}.jpg\tlost" for i, line in enumerate(lines[61:])]
        + [f"gone_more_{i}.jpg\tlost" for i in range(60)]
    )
    open(csv_path, "w").write("\n".join(lines) + "\n")
    result = run(
        "configs/csv_image_text.py:tiny", tmp_path / "run",
        f"--config.data.source=csv:{csv_path}", "--config.data.holdout=0",
        "--config.data.max_bad_fraction=0.2", "--config.data.augment=False",
        "--config.model.image.image_size=32", "--config.train.batch_size=4",
        "--config.train.steps=100", "--config.train.checkpoint_every=2",
        "--config.data.prefetch=1", "--config.data.num_threads=1",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("error: ") and "max_bad_fraction=0.2" in error
    assert "gone_" in error and "(missing file)" in error
    steps = saved_steps(tmp_path / "run")
    assert steps, "no checkpoint was kept"
    checkpointer = Checkpointer(str(tmp_path / "run" / "checkpoints"), read_only=True)
    try:
        _, step = checkpointer.restore_arrays()
    finally:
        checkpointer.close()
    assert step == max(steps)
    shutil.rmtree(tmp_path / "data")


def test_csv_training_evaluates_zero_shot_on_a_class_folder(tmp_path):
    from own_data import write_folder_dataset

    from mmtx import config as config_lib
    from mmtx.train.loop import train_and_evaluate

    csv_path = write_csv_dataset(str(tmp_path / "data"), 64, image_size=32)
    folder = write_folder_dataset(str(tmp_path / "pets"), per_class=3, classes=4)
    config = config_lib.load_config("configs/csv_image_text.py:tiny")
    config.model.image.image_size = 32
    config.data.source = f"csv:{csv_path}"
    config.data.eval_source = f"folder:{folder}"
    config.eval.zero_shot = True
    config.eval.batch_size = 8
    config.train.batch_size = 8
    config.train.steps = 2
    config_lib.validate(config)
    summary = train_and_evaluate(config, str(tmp_path / "run"))
    assert summary["eval"]["num_examples"] == 12  # 4 classes x 3 images, each once
    assert 0 <= summary["eval"]["image_zero_shot_top1"] <= 1
    assert summary["eval"]["image_zero_shot_top5"] == 1.0  # 4 classes: all in the top 5
