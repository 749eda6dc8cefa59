"""Smoke test of ``benchmarks/input_pipeline.py``: tiny measurements produce the report, and
the COCO-like TFDS demo dataset is prepared and read through the coco_captions config.

The script is not part of the ``mmtx`` package, so it is loaded from its file path.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
from helpers import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "input_pipeline.py"
REPO = SCRIPT.parents[1]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script(SCRIPT, "input_pipeline_benchmark")


def test_report_on_a_tiny_text_model(bench, capsys):
    bench.main(
        [
            f"--config={REPO / 'configs' / 'base.py'}:tiny",
            "--batch_size=8",
            "--batches=3",
            "--steps=2",
            "--num_workers=0",
            "--set=model.modalities=('text',)",  # the quickest model to compile
            "--set=model.text.max_length=16",
        ]
    )
    out = capsys.readouterr().out.strip().splitlines()
    report = json.loads(out[-1])
    assert report["source"] == "synthetic" and report["batch_size"] == 8
    (entry,) = report["pipeline"]
    assert entry["num_workers"] == 0 and entry["examples_per_sec"] > 0
    assert report["step_examples_per_sec"] > 0 and report["fed_examples_per_sec"] > 0
    assert entry["ratio_to_step"] == entry["examples_per_sec"] / report["step_examples_per_sec"]
    assert "| workers | pipeline ex/s |" in "\n".join(out)


def test_tfds_demo_reads_coco_like_jpegs(bench, tmp_path):
    args = bench.parse_args(
        [
            f"--config={REPO / 'configs' / 'coco_captions.py'}:tiny",
            f"--tfds_demo={tmp_path}",
            "--tfds_demo_size=6",
            "--batch_size=4",
            "--batches=2",
            "--steps=0",
            "--num_workers=0",
        ]
    )
    report = bench.run(args)
    assert report["source"] == "tfds:coco_like_demo"
    assert report["pipeline"][0]["examples_per_sec"] > 0 and "step_ms" not in report
