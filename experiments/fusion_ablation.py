"""Fusion study: the same small model trained with each fusion module, same budget.

    python experiments/fusion_ablation.py
    python experiments/fusion_ablation.py --steps=300 --fusions=concat,perceiver

Each run starts from :func:`common.base_study_config` (``configs/base.py`` made fast), sets
``config.fusion.type`` and trains with modality dropout (``--modality_dropout``), so every
fusion module learns to cope with a missing modality. Reports per module: held-out accuracy
with all modalities and with each one removed at test time, retrieval recall@1, params
(whole model and fusion alone), forward FLOPs per example (XLA cost analysis) and training
steps/s (steady state, the jitted train step alone).

Writes ``<out_dir>/fusion_ablation.md`` (a table and a header with the command, budget and
machine) and ``<out_dir>/fusion_ablation.png``, and prints the table. ``--variant=tiny`` with
a few steps is a smoke test.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import shlex
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

import common
import ml_collections

from mmtx import output_paths

FUSIONS = ("concat", "gated", "cross_attention", "bottleneck", "perceiver")
RECALL_DIRECTIONS = (("text", "image"), ("image", "text"), ("audio", "text"))
PAPERS = {
    "concat": "early fusion: one joint transformer over all tokens",
    "gated": "late fusion: learned softmax weights over the pooled embeddings",
    "cross_attention": "co-attention streams (ViLBERT, Lu et al. 2019; LXMERT, Tan & Bansal 2019)",
    "bottleneck": "attention bottlenecks (MBT, Nagrani et al., NeurIPS 2021)",
    "perceiver": "latent array cross-attends to all tokens (Perceiver, Jaegle et al., ICML 2021)",
}


def fusion_config(
    base: ml_collections.ConfigDict, fusion: str, *, depth: int, modality_dropout: float
) -> ml_collections.ConfigDict:
    """A copy of ``base`` whose fusion is ``fusion`` with ``depth`` layers."""
    if fusion not in FUSIONS:
        raise ValueError(f"unknown fusion {fusion!r}; choose from {FUSIONS}")
    config = copy.deepcopy(base)
    config.fusion.type = fusion
    config.fusion.depth = depth
    config.fusion.fusion_layer = 0  # bottleneck: every layer exchanges through the bottleneck
    config.model.modality_dropout = modality_dropout
    return config


def removal_subsets(modalities: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Column name -> the modalities kept: ``"all"`` and ``"no <m>"`` for each modality."""
    subsets = {"all": tuple(modalities)}
    for removed in modalities:
        subsets[f"no {removed}"] = tuple(m for m in modalities if m != removed)
    return subsets


def run_fusion(fusion: str, config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Trains one fusion module's config in ``workdir``; returns its table row.

    Row keys: ``fusion``; ``accuracy`` and ``accuracy_no_<m>`` (held-out, with modality
    ``m`` removed at test time); ``<query>_to_<gallery>_recall@1``; ``num_params`` and
    ``fusion_params``; ``gflops_forward`` (per example); ``steps_per_second``.
    """
    summary = common.train(config, workdir)
    subsets = removal_subsets(config.model.modalities)
    metrics = common.evaluate_subsets(workdir, subsets.values())
    row: dict[str, Any] = {
        "fusion": fusion,
        "num_params": summary["num_params"],
        "fusion_params": common.count_params(common.load_trained_model(workdir).params["fusion"]),
        "gflops_forward": common.flops_per_example(config) / 1e9,
        "steps_per_second": common.train_steps_per_second(config),
    }
    for column, subset in subsets.items():
        key = "accuracy" if column == "all" else f"accuracy_{column.replace(' ', '_')}"
        row[key] = metrics[common.subset_name(subset)].get("accuracy")
    for query, gallery in RECALL_DIRECTIONS:
        key = f"{query}_to_{gallery}_recall@1"
        row[key] = summary["eval"].get(key)
    return row


def table_columns(modalities: Sequence[str]) -> list[common.Column]:
    """The report's columns, ``(key, header, format)``."""
    columns: list[common.Column] = [("fusion", "fusion", ""), ("accuracy", "accuracy", ".3f")]
    columns += [(f"accuracy_no_{m}", f"acc. no {m}", ".3f") for m in modalities]
    columns += [(f"{q}_to_{g}_recall@1", f"{q}->{g} R@1", ".3f") for q, g in RECALL_DIRECTIONS]
    columns += [
        ("num_params", "params", ","),
        ("fusion_params", "fusion params", ","),
        ("gflops_forward", "fwd GFLOP/example", ".4f"),
        ("steps_per_second", "train steps/s", ".2f"),
    ]
    return columns


def plot(rows: Sequence[dict[str, Any]], modalities: Sequence[str], path: str, title: str) -> None:
    """Two panels: accuracy with all / each-but-one modality per fusion; train steps/s."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    accuracy = {
        row["fusion"]: {
            "all": row["accuracy"],
            **{f"no {m}": row[f"accuracy_no_{m}"] for m in modalities},
        }
        for row in rows
    }
    speed = {row["fusion"]: {"steps/s": row["steps_per_second"]} for row in rows}
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(13, 4.2), gridspec_kw={"width_ratios": [3, 1.2]}
    )
    common.bar_chart(accuracy, path, title, "held-out accuracy", ax=left, ylim=(0, 1.08))
    common.bar_chart(speed, path, "training speed", "steps / s", ax=right)
    for ax in (left, right):
        ax.tick_params(axis="x", labelrotation=20)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    common.save_png(fig, path)
    plt.close(fig)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    defaults = common.base_study_config()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=defaults.train.steps, help="per fusion")
    parser.add_argument("--workdir_root", default=None, help="default: a new temp directory")
    parser.add_argument("--out_dir", default=os.path.join(common.REPO_ROOT, "docs", "research"))
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the report files if they exist"
    )
    parser.add_argument("--fusions", default=",".join(FUSIONS), help=f"from {','.join(FUSIONS)}")
    parser.add_argument("--depth", type=int, default=2, help="fusion layers (not gated)")
    parser.add_argument("--modality_dropout", type=float, default=0.25)
    parser.add_argument("--variant", default="small", help="size variant (tiny: smoke test)")
    parser.add_argument("--width", type=int, default=defaults.model.text.width)
    parser.add_argument("--batch_size", type=int, default=defaults.train.batch_size)
    parser.add_argument("--eval_size", type=int, default=defaults.data.eval_size)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.fusions = [f.strip() for f in args.fusions.split(",") if f.strip()]
    unknown = [f for f in args.fusions if f not in FUSIONS]
    if unknown or not args.fusions:
        parser.error(f"--fusions: unknown {unknown}; choose from {FUSIONS}")
    return args


def main(
    argv: Sequence[str] | None = None, base_config: ml_collections.ConfigDict | None = None
) -> list[dict[str, Any]]:
    """Runs the study with command-line ``argv`` (default ``sys.argv[1:]``); returns the rows.

    ``base_config``, when given, replaces :func:`common.base_study_config` and the flags that
    feed it; tests use it to run a tiny model.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    md_path = os.path.join(args.out_dir, "fusion_ablation.md")
    png_path = os.path.join(args.out_dir, "fusion_ablation.png")
    output_paths.check_report_paths([md_path, png_path], overwrite=args.overwrite)
    workdir_root = args.workdir_root or tempfile.mkdtemp(prefix="fusion_ablation_")
    base = common.study_base_config(args, base_config)
    rows = []
    started = datetime.datetime.now()
    for fusion in args.fusions:
        print(f"=== {fusion} ===", flush=True)
        config = fusion_config(
            base, fusion, depth=args.depth, modality_dropout=args.modality_dropout
        )
        rows.append(run_fusion(fusion, config, os.path.join(workdir_root, fusion)))
    minutes = (datetime.datetime.now() - started).total_seconds() / 60

    command = shlex.join(["python", "experiments/fusion_ablation.py", *argv])
    model, fusion_cfg = base.model, base.fusion
    modules = "\n".join(f"  - `{name}`: {PAPERS[name]}" for name in args.fusions)
    header = f"""# Fusion modules: same model, same budget

`{command}` ({started:%Y-%m-%d}, {minutes:.1f} min in all; workdirs in `{workdir_root}`)

- Model: `configs/base.py:{args.variant}` (text, image and audio towers at width \
{model.text.width}), fusion width {fusion_cfg.width}, {args.depth} fusion layers (gated has
  none), {fusion_cfg.num_heads} heads; bottleneck: {fusion_cfg.num_bottlenecks} tokens, fusion \
from layer 0; perceiver: {fusion_cfg.num_latents} latents.
- Modules:
{modules}
- Budget: {args.steps} steps at batch {args.batch_size}, peak learning rate \
{base.train.learning_rate:g}, seed {args.seed}, modality dropout {args.modality_dropout}
  in training; metrics on {args.eval_size} held-out synthetic examples after the last step.
- "acc. no m": accuracy of the same trained model with modality m removed from every eval
  batch. The retrieval recalls use the per-modality embeddings, which the fusion shapes
  only through the shared training loss.
- Machine: {common.machine_description()}. FLOPs are XLA's count for the forward pass at
  batch 8; steps/s time the jitted train step alone (median of repeated steps after
  warm-up) on this shared machine, so they are noisy.
"""
    columns = table_columns(base.model.modalities)
    table = common.write_markdown_table(
        rows, columns, md_path, header=header, footer="![fusion modules](fusion_ablation.png)"
    )
    plot(rows, base.model.modalities, png_path, f"fusion modules, {args.steps} steps")
    print(table)
    print(f"wrote {md_path} and {png_path}")
    return rows


if __name__ == "__main__":
    main()
