"""``benchmarks/xla_options_ab.py`` on a tiny config: every variant compiled and timed in turn,
each on its own copy of the donated state. Nothing asserts a time."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import load_script
from test_train_step import TINY_CONFIG

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "xla_options_ab.py"


def test_ab_times_the_default_and_each_variant_per_round(tmp_path, capsys):
    script = load_script(SCRIPT, "xla_options_ab")
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY_CONFIG))
    payload = script.main(
        [
            f"--config={config}",
            "--variant=xla_cpu_enable_fast_min_max=false",
            "--variant=xla_cpu_prefer_vector_width=256;xla_cpu_enable_fast_min_max=false",
            "--rounds=2",
            "--steps=1",
            "--warmup=1",
        ]
    )
    default, *variants = payload["variants"]
    assert default["options"] == {} and "ratio" not in default
    assert [v["options"] for v in variants] == [
        {"xla_cpu_enable_fast_min_max": False},
        {"xla_cpu_prefer_vector_width": "256", "xla_cpu_enable_fast_min_max": False},
    ]
    for variant in payload["variants"]:
        assert len(variant["round_ms"]) == 2 and min(variant["round_ms"]) > 0
    for variant in variants:
        assert len(variant["ratios"]) == 2
        assert variant["ratio_range"][0] <= variant["ratio"] <= variant["ratio_range"][1]
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == payload
