"""The headline of an evaluation: the few metrics the training log and its ``final:`` line
show, picked from the configured modalities' metrics.

Each modality's evaluation is summed up by the metrics its spec names
(:attr:`ModalitySpec.headline <mmtx.modalities.ModalitySpec>`: retrieval first, then zero-shot,
both in the order of the modalities); a modality that names none shows its recall@1 both ways
and its zero-shot top-1, sorted after them with the task accuracies and the EMA's metrics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mmtx.modalities import get_modality, modality_names


def headline_keys(metrics: Sequence[str], modalities: Sequence[str] | None = None) -> list[str]:
    """The names of ``metrics`` shown, in order: ``accuracy``, the :class:`headlines
    <mmtx.modalities.Headline>` of ``modalities`` (default: every registered one), then the
    rest sorted: any other ``..._recall@1`` and ``..._zero_shot_top1`` (also ``ema/...``)
    and ``task_*``."""
    modalities = modality_names() if modalities is None else modalities
    headlines = [get_modality(m).headline for m in modalities]
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
