"""Attention-kernel study: the same small model trained with each kernel, same budget.

    python experiments/attention_variants.py
    python experiments/attention_variants.py --steps=300 --kernels=dense,local,linear,favor

Every tower (text, image, audio) and the concat fusion use the kernel under study:
``dense`` (exact softmax), ``local`` (sliding window of ``--local_radius`` with the first
token, the CLS, global), ``linear`` (elu+1 linear attention) and ``favor`` (linear attention
with FAVOR+ random features). Each run starts from :func:`common.base_study_config`
(``configs/base.py`` made fast) and reports final held-out accuracy, retrieval recall@1 in
each direction, params, training steps/s and forward FLOPs per example (XLA cost analysis).

Writes ``<out_dir>/attention_variants.md`` (a table and a header with the command, budget and
machine) and ``<out_dir>/attention_variants.png``, and prints the table. ``--variant=tiny``
with a few steps is a smoke test.
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

from mmtx import config as config_lib
from mmtx import output_paths

# Study kernel name -> (config attention name, config.attention.linear.feature_map or None).
KERNELS: dict[str, tuple[str, str | None]] = {
    "dense": ("dense", None),
    "local": ("local", None),
    "linear": ("linear", "elu"),
    "favor": ("linear", "favor"),
}
DEFAULT_KERNELS = ("dense", "local", "linear")
RECALL_DIRECTIONS = (("text", "image"), ("image", "text"), ("audio", "text"))


def kernel_config(
    base: ml_collections.ConfigDict, kernel: str, *, local_radius: int
) -> ml_collections.ConfigDict:
    """A copy of ``base`` with every tower and the fusion using study kernel ``kernel``."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; choose from {sorted(KERNELS)}")
    config = copy.deepcopy(base)
    attention, feature_map = KERNELS[kernel]
    common.set_attention(config, attention, fusion=True)
    config.attention.local.radius = local_radius
    if feature_map is not None:
        config.attention.linear.feature_map = feature_map
    return config


def sequence_lengths(config: ml_collections.ConfigDict) -> dict[str, int]:
    """Tokens each transformer attends over (CLS included): tower name / ``fusion`` -> int.

    Text is padded to ``max_length`` (its padding is masked); the image has one token per
    patch; audio one per (time x mel) patch of the log-mel spectrogram; the concat fusion
    joins them all after its own CLS.
    """
    lengths = {m: config_lib.tower_tokens(config, m) for m in config.model.modalities}
    lengths["fusion"] = 1 + sum(lengths.values())
    return lengths


def run_kernel(
    kernel: str, config: ml_collections.ConfigDict, workdir: str, *, train_flops: bool
) -> dict[str, Any]:
    """Trains one kernel's config in ``workdir``; returns its table row.

    Row keys: ``kernel``, ``accuracy``, ``<query>_to_<gallery>_recall@1`` (floats in [0, 1]),
    ``num_params`` (int), ``steps_per_second`` (steady state: no compile, no eval; see
    :func:`common.steady_steps_per_second`), ``train_seconds`` (the loop's wall time, compile and
    evaluation included), ``gflops_forward`` (forward GFLOPs per example) and, with
    ``train_flops``, ``gflops_train_step``.
    """
    summary = common.train(config, workdir)
    row: dict[str, Any] = {
        "kernel": kernel,
        "accuracy": summary["eval"].get("accuracy"),
        "num_params": summary["num_params"],
        "steps_per_second": summary["steady_steps_per_second"],
        "train_seconds": summary["train_seconds_this_run"],
        "gflops_forward": common.flops_per_example(config) / 1e9,
    }
    for query, gallery in RECALL_DIRECTIONS:
        key = f"{query}_to_{gallery}_recall@1"
        row[key] = summary["eval"].get(key)
    if train_flops:
        row["gflops_train_step"] = common.train_step_flops_per_example(config) / 1e9
    return row


def table_columns(rows: Sequence[dict[str, Any]]) -> list[common.Column]:
    """The report's columns, ``(key, header, format)``; train-step FLOPs only when measured."""
    columns: list[common.Column] = [("kernel", "kernel", ""), ("accuracy", "accuracy", ".3f")]
    for query, gallery in RECALL_DIRECTIONS:
        columns.append((f"{query}_to_{gallery}_recall@1", f"{query}->{gallery} R@1", ".3f"))
    columns += [
        ("num_params", "params", ","),
        ("steps_per_second", "steps/s", ".2f"),
        ("train_seconds", "loop s", ".0f"),
        ("gflops_forward", "fwd GFLOP/example", ".3f"),
    ]
    if any("gflops_train_step" in row for row in rows):
        columns.append(("gflops_train_step", "train-step GFLOP/example", ".3f"))
    return columns


def plot(rows: Sequence[dict[str, Any]], path: str, title: str) -> None:
    """Two panels: accuracy and recall@1 per kernel (left), training steps/s (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    quality = {
        row["kernel"]: {
            "accuracy": row["accuracy"],
            **{
                f"{q}->{g} R@1": row[f"{q}_to_{g}_recall@1"]
                for q, g in RECALL_DIRECTIONS
                if row.get(f"{q}_to_{g}_recall@1") is not None
            },
        }
        for row in rows
    }
    speed = {row["kernel"]: {"steps/s": row["steps_per_second"] or float("nan")} for row in rows}
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [3, 1.2]}
    )
    common.bar_chart(quality, path, title, "held-out metric", ax=left, ylim=(0, 1.08))
    common.bar_chart(speed, path, "training speed", "steps / s", ax=right)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    common.save_png(fig, path)
    plt.close(fig)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    defaults = common.base_study_config()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=defaults.train.steps, help="per kernel")
    parser.add_argument("--workdir_root", default=None, help="default: a new temp directory")
    parser.add_argument("--out_dir", default=os.path.join(common.REPO_ROOT, "docs", "research"))
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the report files if they exist"
    )
    parser.add_argument(
        "--kernels",
        default=",".join(DEFAULT_KERNELS),
        help=f"comma-separated, from {','.join(KERNELS)}",
    )
    parser.add_argument("--variant", default="small", help="size variant (tiny: smoke test)")
    parser.add_argument(
        "--width",
        type=int,
        default=defaults.model.text.width,
        help="width of every tower and the fusion (0: the variant's own)",
    )
    parser.add_argument("--batch_size", type=int, default=defaults.train.batch_size)
    parser.add_argument("--eval_size", type=int, default=defaults.data.eval_size)
    parser.add_argument("--local_radius", type=int, default=16, help="local kernel's window")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--train_flops", action="store_true", help="also count train-step FLOPs (slow compile)"
    )
    args = parser.parse_args(argv)
    args.kernels = [k.strip() for k in args.kernels.split(",") if k.strip()]
    unknown = [k for k in args.kernels if k not in KERNELS]
    if unknown or not args.kernels:
        parser.error(f"--kernels: unknown {unknown}; choose from {sorted(KERNELS)}")
    return args


def main(
    argv: Sequence[str] | None = None, base_config: ml_collections.ConfigDict | None = None
) -> list[dict[str, Any]]:
    """Runs the study with command-line ``argv`` (default ``sys.argv[1:]``); returns the rows.

    ``base_config``, when given, replaces :func:`common.base_study_config` and the flags that
    feed it (``--steps``, ``--variant``, ``--width``, ``--batch_size``, ``--eval_size``,
    ``--seed``); tests use it to run a tiny model.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    md_path = os.path.join(args.out_dir, "attention_variants.md")
    png_path = os.path.join(args.out_dir, "attention_variants.png")
    output_paths.check_report_paths([md_path, png_path], overwrite=args.overwrite)
    workdir_root = args.workdir_root or tempfile.mkdtemp(prefix="attention_variants_")
    base = common.study_base_config(args, base_config)
    rows = []
    started = datetime.datetime.now()
    for kernel in args.kernels:
        print(f"=== {kernel} ===", flush=True)
        config = kernel_config(base, kernel, local_radius=args.local_radius)
        rows.append(
            run_kernel(
                kernel, config, os.path.join(workdir_root, kernel), train_flops=args.train_flops
            )
        )
    minutes = (datetime.datetime.now() - started).total_seconds() / 60

    lengths = ", ".join(f"{k} {v}" for k, v in sequence_lengths(base).items())
    command = shlex.join(["python", "experiments/attention_variants.py", *argv])
    model = base.model
    kernel_notes = {
        "local": f"`local` has radius {args.local_radius} with the first token (CLS) global",
        "linear": "`linear` is elu+1",
        "favor": f"`favor` is FAVOR+ with "
        f"{base.attention.linear.num_features or '4 x head_dim'} random features",
    }
    notes = "; ".join(kernel_notes[k] for k in args.kernels if k in kernel_notes)
    header = "\n".join(
        [
            "# Attention kernels: same model, same budget",
            "",
            f"`{command}` ({started:%Y-%m-%d}, {minutes:.1f} min in all; workdirs in "
            f"`{workdir_root}`)",
            "",
            f"- Model: `configs/base.py:{args.variant}` (text, image and audio towers, concat "
            f"fusion) at width {model.text.width} (MLP {model.text.mlp_dim}, "
            f"{model.text.num_heads} heads; depth text/image/audio/fusion {model.text.depth}/"
            f"{model.image.depth}/{model.audio.depth}/{base.fusion.depth}), with the kernel "
            "below in every tower and in the fusion.",
            f"- Budget: {args.steps} steps at batch {args.batch_size}, peak learning rate "
            f"{base.train.learning_rate:g}, seed {args.seed}; metrics on {args.eval_size} "
            "held-out synthetic examples after the last step.",
            f"- Sequence lengths (CLS included): {lengths}.",
            *([f"- Kernels: {notes}."] if notes else []),
            f"- Machine: {common.machine_description()}, shared with other jobs, so timings "
            f"are noisy. steps/s is steady-state training (after the first "
            f"{base.train.log_every} steps, so no compile; input pipeline included); "
            '"loop s" is the training loop\'s wall time (compile and the final evaluation '
            "included). FLOPs are XLA's count for the forward pass (batch 8, layers "
            "unrolled), per example.",
        ]
    )
    columns = table_columns(rows)
    table = common.write_markdown_table(
        rows, columns, md_path, header=header, footer="![attention kernels](attention_variants.png)"
    )
    plot(rows, png_path, f"attention kernels, {args.steps} steps")
    print(table)
    print(f"wrote {md_path} and {png_path}")
    return rows


if __name__ == "__main__":
    main()
