"""The headline metrics come from the modalities' specs (``ModalitySpec.headline``), not
from a table that names modalities."""

from __future__ import annotations

import pytest

from mmtx.evaluate.headline import headline, headline_keys
from mmtx.modalities import Headline, ModalitySpec, register_modality, unregister_modality


class GaugeSpec(ModalitySpec):
    """A toy modality that names its headline (only the attribute matters here)."""

    name = "gauge"
    headline = Headline(
        retrieval=("gauge_to_text_recall@1",),
        zero_shot=("gauge_zero_shot_top5",),
        hidden=("text_to_gauge_recall@1",),
    )


@pytest.fixture
def gauge():
    spec = register_modality(GaugeSpec())
    yield spec
    unregister_modality("gauge")


METRICS = [
    "loss",
    "accuracy",
    "text_to_image_recall@1",
    "image_to_text_recall@5",
    "image_zero_shot_top5",
    "text_to_audio_recall@1",
    "audio_to_text_recall@1",
    "gauge_to_text_recall@1",
    "gauge_to_text_recall@5",
    "text_to_gauge_recall@1",
    "gauge_zero_shot_top1",
    "gauge_zero_shot_top5",
    "ema/text_to_image_recall@1",
    "task_sort_accuracy",
]


def test_a_spec_headline_picks_its_metrics(gauge):
    # Named first (retrieval, then zero-shot, in modality order), then the other recall@1,
    # zero-shot top-1 and task metrics sorted; the hidden ones and the named-by-none @5 not.
    assert headline_keys(METRICS, ("text", "image", "audio", "gauge")) == [
        "accuracy",
        "text_to_image_recall@1",
        "image_to_text_recall@5",
        "audio_to_text_recall@1",
        "gauge_to_text_recall@1",
        "image_zero_shot_top5",
        "gauge_zero_shot_top5",
        "ema/text_to_image_recall@1",
        "gauge_zero_shot_top1",
        "task_sort_accuracy",
    ]


def test_a_modality_without_a_headline_shows_the_default_metrics():
    keys = headline_keys(
        ["text_to_video_recall@1", "video_to_text_recall@5", "accuracy"], ("video",)
    )
    assert keys == ["accuracy", "text_to_video_recall@1"]


def test_only_configured_modalities_headline():
    keys = headline_keys(METRICS, ("text", "audio"))
    assert "image_to_text_recall@5" not in keys and "audio_to_text_recall@1" in keys
    assert headline({"accuracy": 0.123456, "loss": 1.0}, ("text",)) == {"accuracy": 0.1235}
