"""Smoke test of experiments/fusion_ablation.py: two fusion modules, a tiny model, 2 steps.

(Every module's behaviour is tested in tests/fusion; this checks the study's plumbing.)
"""

import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))
common = importlib.import_module("common")
fusion_ablation = importlib.import_module("fusion_ablation")


def test_fusion_ablation_writes_a_row_per_fusion(tmp_path):
    """One fusion (each costs six compiles): the study's plumbing, not a comparison."""
    base = common.base_study_config(
        2, variant="tiny", width=None, batch_size=8, eval_size=16, eval_batch_size=16
    )
    base.model.text.max_length = 32
    out_dir = tmp_path / "out"
    rows = fusion_ablation.main(
        [
            f"--out_dir={out_dir}",
            f"--workdir_root={tmp_path / 'runs'}",
            "--fusions=bottleneck",
        ],
        base_config=base,
    )
    assert [row["fusion"] for row in rows] == ["bottleneck"]
    for row in rows:
        for key in ("accuracy", "accuracy_no_text", "accuracy_no_image", "accuracy_no_audio"):
            assert 0.0 <= row[key] <= 1.0, (row["fusion"], key)
        assert 0 < row["fusion_params"] < row["num_params"]
        assert row["gflops_forward"] > 0 and row["steps_per_second"] > 0
    table = (out_dir / "fusion_ablation.md").read_text()
    assert "| bottleneck |" in table
    assert (out_dir / "fusion_ablation.png").stat().st_size > 0


def test_an_existing_report_is_replaced_only_with_overwrite(tmp_path):
    """Checked before anything runs: the docs' committed report is not clobbered by default."""
    (tmp_path / "fusion_ablation.md").write_text("committed report")
    try:
        fusion_ablation.main([f"--out_dir={tmp_path}", "--fusions=gated"])
    except SystemExit as error:
        message = str(error)
    else:
        raise AssertionError("an existing report was not refused")
    assert message == (
        f"error: {tmp_path / 'fusion_ablation.md'} exists; pass --overwrite to replace it"
    )
    assert (tmp_path / "fusion_ablation.md").read_text() == "committed report"
