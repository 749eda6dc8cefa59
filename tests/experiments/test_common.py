"""Tests for experiments/common.py and a smoke run of experiments/attention_variants.py."""

import copy
import importlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))
common = importlib.import_module("common")
attention_variants = importlib.import_module("attention_variants")

ALL_DIRECTIONS = {"text_to_image", "image_to_text", "text_to_audio", "audio_to_text"}


def tiny_study_config(steps: int = 2):
    config = common.base_study_config(
        steps, variant="tiny", width=None, batch_size=8, eval_size=24, eval_batch_size=16
    )
    config.model.text.max_length = 32
    return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run"))
    summary = common.train(tiny_study_config(), workdir)
    return workdir, summary


def test_base_study_config_checkpoints_and_evaluates_at_the_last_step():
    config = common.base_study_config(37)
    assert config.variant == "small" and config.train.steps == 37
    assert config.train.eval_every == config.train.checkpoint_every == 37
    assert config.eval.batch_size <= config.data.eval_size


def test_train_returns_the_summary(trained):
    workdir, summary = trained
    assert summary["step"] == 2 and summary["eval"]["num_examples"] == 24
    assert summary["steps_per_second"] > 0 and summary["steady_steps_per_second"] > 0
    assert os.listdir(os.path.join(workdir, "checkpoints")) == ["2"]
    assert common.count_params(common.load_trained_model(workdir).params) == summary["num_params"]


def test_evaluate_subsets_reports_only_the_present_directions(trained):
    workdir, summary = trained
    subsets = [("text", "image", "audio"), ("text", "image"), ("image", "audio")]
    results = common.evaluate_subsets(workdir, subsets)
    assert list(results) == ["text+image+audio", "text+image", "image+audio"]
    expected = {
        "text+image+audio": ALL_DIRECTIONS,
        "text+image": {"text_to_image", "image_to_text"},
        "image+audio": set(),
    }
    for name, metrics in results.items():
        assert metrics["num_examples"] == 24
        assert 0.0 <= metrics["accuracy"] <= 1.0
        directions = {k.rsplit("_recall@", 1)[0] for k in metrics if "_recall@" in k}
        assert directions == expected[name], name
        assert all(isinstance(v, float) for v in metrics.values())
    # All modalities present: the loop's own final evaluation (evaluate_subsets runs no
    # zero-shot classifier: those keys are the loop's alone).
    for key, value in summary["eval"].items():
        if "_zero_shot_" in key:
            continue
        assert results["text+image+audio"][key] == pytest.approx(value, abs=1e-4), key
    # Dropping modalities changes what the fused classifier sees.
    assert results["image+audio"]["classification"] != results["text+image+audio"]["classification"]


def test_evaluate_subsets_rejects_unknown_or_empty_subsets(trained):
    workdir, _ = trained
    with pytest.raises(ValueError, match="subset"):
        common.evaluate_subsets(workdir, [("text", "video")])
    with pytest.raises(ValueError, match="subset"):
        common.evaluate_subsets(workdir, [()])


def test_drop_modalities_drops_text_mask_with_text():
    batch = {k: np.zeros(2) for k in ("text", "text_mask", "image", "audio", "label", "shape")}
    assert set(common.drop_modalities(batch, ("image",))) == {"image", "label", "shape"}
    assert set(common.drop_modalities(batch, ("text", "audio"))) == {
        "text",
        "text_mask",
        "audio",
        "label",
        "shape",
    }


def test_flops_per_example_positive_batch_independent_and_grows_with_width():
    config = tiny_study_config()
    config.model.modalities = ("text",)  # one tower compiles fast
    narrow = common.flops_per_example(config, batch_size=4)
    assert narrow > 0
    assert common.flops_per_example(config, batch_size=8) == pytest.approx(narrow, rel=0.05)
    wide = copy.deepcopy(config)
    for tower in (wide.model.text, wide.model.image, wide.model.audio, wide.fusion):
        tower.width, tower.mlp_dim = 2 * tower.width, 2 * tower.mlp_dim
    assert common.flops_per_example(wide, batch_size=4) > 1.5 * narrow


def test_train_step_flops_and_speed():
    config = tiny_study_config()
    config.model.modalities = ("text",)
    forward = common.flops_per_example(config, batch_size=4)
    # Backward is about twice the forward.
    assert common.train_step_flops_per_example(config, batch_size=4) > 2 * forward
    assert common.train_steps_per_second(config, batch_size=4, steps=2) > 0


def test_write_markdown_table(tmp_path):
    rows = [
        {"name": "dense", "acc": 0.91234, "params": 1234567, "speed": None},
        {"name": "local", "acc": 0.5, "params": 12},
    ]
    columns = [("name", "kernel", ""), ("acc", "accuracy", ".3f"), ("params", "params", ",")]
    columns.append(("speed", "steps/s", ".2f"))
    path = tmp_path / "sub" / "table.md"
    table = common.write_markdown_table(rows, columns, path, header="# Title\n\ntext")
    assert table == (
        "| kernel | accuracy | params | steps/s |\n"
        "|:---|---:|---:|---:|\n"
        "| dense | 0.912 | 1,234,567 | - |\n"
        "| local | 0.500 | 12 | - |\n"
    )
    assert path.read_text() == "# Title\n\ntext\n\n" + table


def test_bar_chart_writes_a_png(tmp_path):
    path = tmp_path / "chart.png"
    groups = {"dense": {"accuracy": 0.9, "R@1": 0.5}, "local": {"accuracy": 0.7}}
    common.bar_chart(groups, path, "title", "metric")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_kernel_config_sets_every_tower_and_the_fusion():
    base = tiny_study_config()
    for kernel, attention, feature_map in [
        ("local", "local", "elu"),
        ("linear", "linear", "elu"),
        ("favor", "linear", "favor"),
    ]:
        config = attention_variants.kernel_config(base, kernel, local_radius=5)
        towers = [config.model.text, config.model.image, config.model.audio, config.fusion]
        assert [t.attention for t in towers] == [attention] * 4
        assert config.attention.local.radius == 5
        assert config.attention.linear.feature_map == feature_map
    assert base.fusion.attention == "dense"  # the base is not modified
    assert attention_variants.sequence_lengths(base) == {
        "text": 33,
        "image": 65,
        "audio": 25,
        "fusion": 124,
    }


def test_attention_variants_smoke(tmp_path, capsys):
    argv = [
        "--kernels=dense",
        f"--workdir_root={tmp_path / 'runs'}",
        f"--out_dir={tmp_path / 'out'}",
    ]
    rows = attention_variants.main(argv, base_config=tiny_study_config(steps=2))
    assert [row["kernel"] for row in rows] == ["dense"]
    for row in rows:
        assert 0.0 <= row["accuracy"] <= 1.0
        assert 0.0 <= row["text_to_image_recall@1"] <= 1.0
        assert row["gflops_forward"] > 0 and row["num_params"] > 0
    report = (tmp_path / "out" / "attention_variants.md").read_text()
    assert "--kernels=dense" in report and "2 steps at batch 8" in report
    assert "| dense |" in report
    assert (tmp_path / "out" / "attention_variants.png").stat().st_size > 0
    assert "| kernel | accuracy |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        attention_variants.main(["--kernels=sparse"])
