"""Smoke tests of ``benchmarks/train_step.py`` and the dimensions of ``configs/bench_clip.py``.

The benchmark scripts are not part of the ``mmtx`` package, so they are loaded from their file
paths. Nothing here asserts a time: the timed numbers only have to be present and positive.
The open_clip peer needs torch, which is not in the project's environment, so it is only
parsed.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from types import ModuleType

import flax.linen as nn
import jax
import pytest
from helpers import load_script

from mmtx import config as config_lib
from mmtx.models import MultiModalTransformer, dummy_batch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "train_step.py"
COMPARE_SCRIPT = ROOT / "benchmarks" / "compare_open_clip.py"
PEER_SCRIPT = ROOT / "benchmarks" / "peers" / "open_clip_step.py"
BENCH_CONFIG = str(ROOT / "configs" / "bench_clip.py")
_TINY = {"width": 32, "depth": 1, "num_heads": 2, "mlp_dim": 64}
TINY_CONFIG = {
    "dtype": "float32",
    "model": {
        "modalities": ["text", "image"],
        "embed_dim": 32,
        "num_classes": 0,
        "scan_layers": False,
        "text": {"max_length": 16, **_TINY},
        "image": {"image_size": 32, "patch_size": 8, **_TINY},
    },
    "fusion": {"type": "gated", **_TINY},
    "loss": {"classification_weight": 0.0},
}


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return load_script(SCRIPT, "train_step_benchmark")


def test_tiny_run_prints_the_result_keys(
    script: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY_CONFIG))
    argv = [
        f"--config={config}",
        "--batch_size=8",
        "--steps=2",
        "--warmup=1",
        "--peak_size=256",
        "--peak_repeats=2",
        "--config.train.learning_rate=0.002",
    ]
    returned = script.main(argv)

    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert payload == json.loads(json.dumps(returned))
    for key in script.RESULT_KEYS:
        assert payload[key] is not None and payload[key] > 0, key
    assert payload["batch_size"] == 8 and len(payload["step_ms_all"]) == 2
    # The matmul peak is measured before and after the steps; the reported peak is the mean
    # (compare_open_clip.py takes the better of the two).
    runs = payload["peak_gflops_runs"]
    assert len(runs) == 2 and all(rate > 0 for rate in runs)
    assert payload["peak_gflops"] == pytest.approx(sum(runs) / 2, abs=0.01)
    # The JSON values are rounded (mfu to 4 decimals, step_ms to 2): allow for that.
    assert payload["mfu"] == pytest.approx(
        payload["achieved_gflops"] / payload["peak_gflops"], rel=1e-3, abs=1e-4
    )
    assert payload["examples_per_sec"] == pytest.approx(
        8 / (payload["step_ms"] / 1e3), rel=1e-3 + 0.005 / payload["step_ms"]
    )
    # Unrolled layers: the step's own XLA count is the one reported.
    assert payload["flops_xla"] == payload["flops_xla_compiled"]
    # Even at width 32, where elementwise work is relatively large, the counts are close.
    assert 0.9 < payload["flops_ratio_xla_to_analytic"] < 1.25


def test_overrides_and_attention_sweep_set_the_config(script: ModuleType) -> None:
    args, overrides = script.parse_args(
        ["--attention=dense,local", "--config.model.text.attention=linear", "--steps=3"]
    )
    assert args.attention == "dense,local" and args.steps == 3
    assert overrides == {"model.text.attention": "linear"}
    config = script.load_config(BENCH_CONFIG, overrides, batch_size=16)
    assert config.model.text.attention == "linear" and config.model.image.attention == "dense"
    assert config.train.batch_size == 16
    config = script.load_config(BENCH_CONFIG, {"model.scan_layers": "true"}, attention="local")
    assert config.model.scan_layers is True
    assert {config.model.text.attention, config.model.image.attention} == {"local"}
    with pytest.raises(KeyError, match=r"model\.text\.nope"):
        script.load_config(BENCH_CONFIG, {"model.text.nope": "1"})


def test_analytic_flops_match_xla_for_the_bench_model(script: ModuleType) -> None:
    """The per-layer-type count of configs/bench_clip.py against XLA's cost analysis.

    Compiled from shapes (not run), unrolled so that XLA counts every block. Batch 8 keeps
    the compile small; every term but the contrastive logits is linear in the batch.
    """
    config = script.load_config(BENCH_CONFIG, batch_size=8)
    flops = script.analytic_flops(config, 8)
    assert flops["complete"]
    forward = flops["forward"]
    # One block of one tower, per example: 4 projections, scores + values, a 2-layer MLP.
    tokens, width, mlp = 65, 256, 1024
    per_block = 8 * tokens * width**2 + 4 * tokens**2 * width + 4 * tokens * width * mlp
    encoders = forward["attention_projections"] + forward["attention_core"] + forward["mlp"]
    assert encoders == pytest.approx(8 * 2 * 4 * per_block)
    assert forward["stem"] == pytest.approx(8 * 2 * 64 * (8 * 8 * 3) * width)
    assert flops["train"] == pytest.approx(3 * flops["forward_total"])
    xla = script.unrolled_xla_flops(config, {})
    # XLA adds the elementwise work (LayerNorm, softmax, GELU, AdamW): about 1 % here.
    assert 1.0 <= xla / flops["train"] < 1.05


def test_bench_clip_tower_params_follow_the_formula() -> None:
    config = config_lib.load_config(BENCH_CONFIG)
    model = config.model
    assert model.modalities == ("text", "image") and model.num_classes == 0
    assert config.dtype == "float32" and config.train.batch_size == 64
    assert config.loss.contrastive == "softmax" and not config.loss.attribute_weight
    assert not model.attribute_classes and model.image.stem == "patch"
    module = MultiModalTransformer.from_config(config, vocab_size=259)
    abstract = jax.eval_shape(
        lambda rng: module.init(rng, dummy_batch(config, 1)), jax.random.key(0)
    )
    params = nn.meta.unbox(abstract["params"])

    def count(tree: object) -> int:
        return sum(x.size for x in jax.tree.leaves(tree))

    d, m, depth, e = 256, 1024, 4, 256
    block = 4 * (d * d + d) + d * m + m + m * d + d + 2 * (2 * d)  # attention, MLP, 2 LNs
    encoder = depth * block + 2 * d  # + the final LayerNorm
    text = 259 * d + 64 * d + d + encoder  # token table, positions, CLS
    image = (8 * 8 * 3 * d + d) + 64 * d + d + encoder  # patch projection, positions, CLS
    assert count(params["text"]) == text == 3_242_496
    assert count(params["image"]) == image == 3_225_600
    assert count(params["text_head"]) == count(params["image_head"]) == d * e + e


def test_peer_and_compare_scripts_parse() -> None:
    """Syntax only for the peer (torch is not a project dependency); the compare script's
    argument handling splits config overrides off."""
    ast.parse(PEER_SCRIPT.read_text())
    compare = load_script(COMPARE_SCRIPT, "compare_open_clip_benchmark")
    args, overrides = compare.parse_args(["--rounds=2", "--config.model.remat=full"])
    assert args.rounds == 2 and overrides == ["--config.model.remat=full"]
    assert "--no_unrolled_count" in compare.mmtx_command(args, overrides)
    assert compare.last_json_line('x\n{"a": 1}\nnoise\n') == {"a": 1}


def test_analytic_flops_of_a_model_without_fusion(script: ModuleType) -> None:
    """fusion.type='none' (with no classifier, as it must be) is a complete count: the same
    as the bench model's, whose fusion feeds nothing; projection 'none' drops its head."""
    config = script.load_config(BENCH_CONFIG, batch_size=8)
    fused = script.analytic_flops(config, 8)
    config.fusion.type = "none"
    unfused = script.analytic_flops(config_lib.validate(config), 8)
    assert unfused["complete"] and unfused == fused
    config.model.image.projection = "none"
    no_head = script.analytic_flops(config_lib.validate(config), 8)
    image = config.model.image
    assert unfused["forward"]["heads"] - no_head["forward"]["heads"] == pytest.approx(
        8 * 2.0 * image.width * config.model.embed_dim
    )
