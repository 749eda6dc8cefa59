"""The headline of an evaluation: the few metrics the training log and its ``final:`` line
show, picked from the configured modalities' metrics.

Each modality's evaluation is summed up by the metrics of :data:`HEADLINES` (retrieval
first, then zero-shot, both in the order of the modalities); a modality without an entry shows
its recall@1 both ways and its zero-shot top-1, sorted after them with the task accuracies
and the EMA's metrics.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from mmtx.modalities import modality_names


@dataclasses.dataclass(frozen=True)
class Headline:
    """What the headline shows of one modality: metric names, in order.

    ``retrieval``: its recalls against text; ``zero_shot``: its zero-shot accuracies.
    ``hidden``: metrics of the modality left out (a direction too noisy to headline).
    """

    retrieval: tuple[str, ...] = ()
    zero_shot: tuple[str, ...] = ()
    hidden: tuple[str, ...] = ()


# The selection the README and docs/usage.md show for configs/base.py (its eval lines).
HEADLINES: Mapping[str, Headline] = {
    "image": Headline(
        retrieval=(
            "text_to_image_recall@1",
            "text_to_image_recall@5",
            "image_to_text_recall@1",
            "image_to_text_recall@5",
        ),
        zero_shot=("image_zero_shot_top1", "image_zero_shot_top5"),
    ),
    "audio": Headline(
        retrieval=("audio_to_text_recall@1", "audio_to_text_recall@5"),
        zero_shot=("audio_zero_shot_top1",),
        hidden=("text_to_audio_recall@1",),
    ),
}


def headline_keys(metrics: Sequence[str], modalities: Sequence[str] | None = None) -> list[str]:
    """The names of ``metrics`` shown, in order: ``accuracy``, the :data:`HEADLINES` of
    ``modalities`` (default: every registered one), then the rest sorted: any other
    ``..._recall@1`` and ``..._zero_shot_top1`` (also ``ema/...``) and ``task_*``."""
    modalities = modality_names() if modalities is None else modalities
    headlines = [HEADLINES[m] for m in modalities if m in HEADLINES]
    first = (
        "accuracy",
        *(name for headline in headlines for name in headline.retrieval),
        *(name for headline in headlines for name in headline.zero_shot),
    )
    hidden = {name for headline in headlines for name in headline.hidden}
    rest = sorted(
        name
        for name in metrics
        if name not in first
        and name not in hidden
        and (name.endswith(("_recall@1", "_zero_shot_top1")) or name.startswith("task_"))
    )
    return [name for name in (*first, *rest) if name in metrics]


def headline(
    metrics: Mapping[str, float], modalities: Sequence[str] | None = None
) -> dict[str, float]:
    """``metrics``' :func:`headline_keys`, each value a float rounded to 4 places."""
    return {k: round(float(metrics[k]), 4) for k in headline_keys(list(metrics), modalities)}
