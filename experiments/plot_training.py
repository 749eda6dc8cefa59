"""Plots a run's loss curves and eval metrics from its TensorBoard event files.

python experiments/plot_training.py --workdir=workdir --out=training.png

``--out`` (default ``training.png``) is never written inside a workdir, and an existing file
(such as the docs' ``docs/assets/base_training.png``) is replaced only with ``--overwrite``.
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from mmtx import output_paths
from mmtx.train.metrics import read_scalars

LOSS_TAGS = (
    "train/loss",
    "train/contrastive_text_image",
    "train/contrastive_text_audio",
    "train/contrastive_image_audio",
    "train/classification",
)
EVAL_TAGS = (
    "eval/accuracy",
    "eval/text_to_image_recall_1",
    "eval/image_to_text_recall_1",
    "eval/audio_to_text_recall_1",
)


def plot(workdir: str, out: str) -> None:
    """Writes a two-panel PNG: training losses (left) and eval metrics (right)."""
    scalars = read_scalars(workdir)
    if not scalars:
        raise SystemExit(f"no event files with scalars in {workdir}")
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for tag in LOSS_TAGS:
        if tag in scalars:
            steps, values = zip(*scalars[tag], strict=True)
            left.plot(steps, values, label=tag.removeprefix("train/"), linewidth=1)
    left.set(xlabel="step", ylabel="loss", yscale="log", title="training losses")
    left.legend(fontsize=8)
    for tag in EVAL_TAGS:
        if tag in scalars:
            steps, values = zip(*scalars[tag], strict=True)
            right.plot(steps, values, marker="o", label=tag.removeprefix("eval/"))
    right.set(xlabel="step", ylabel="held-out metric", ylim=(0, 1.02), title="evaluation")
    right.legend(fontsize=8, loc="lower right")
    right.grid(alpha=0.3)
    fig.tight_layout()
    with output_paths.atomic_output(out) as temporary:
        fig.savefig(temporary, dpi=110, format="png")
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="workdir")
    parser.add_argument("--out", default="training.png", help="the PNG to write")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = parser.parse_args()
    try:
        output_paths.check_output_path(args.out, overwrite=args.overwrite)
    except output_paths.OutputPathError as error:
        raise SystemExit(f"error: {error}") from None
    plot(args.workdir, args.out)


if __name__ == "__main__":
    main()
