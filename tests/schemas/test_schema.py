"""Tests for mmtx.schemas.schema: the checks a modality's schema shares with every other."""

from mmtx.schemas import AudioSchema, ImageSchema, VideoSchema


def failures(schema, **changes):
    group = schema.default_config()
    group.update(changes)
    failed = []

    def require(ok, field, why):
        if not ok:
            failed.append(f"config.{field}: {why}")

    schema.require_choices(group, require)
    return failed


def test_require_choices_checks_every_field_that_declares_choices():
    assert failures(ImageSchema()) == []
    assert failures(VideoSchema(), layout="joint", resize="squash") == []
    assert failures(ImageSchema(), resize="bogus", crop_offset="ceil") == [
        "config.model.image.resize: 'bogus' is not one of ('shorter_side', 'squash')",
        "config.model.image.crop_offset: 'ceil' is not one of ('round', 'floor')",
    ]
    assert failures(VideoSchema(), layout="divided") == [
        "config.model.video.layout: 'divided' is not one of ('joint', 'factorised')"
    ]
    assert failures(AudioSchema(), frontend="mfcc") == [
        "config.model.audio.frontend: 'mfcc' is not one of ('log_mel', 'kaldi_fbank')"
    ]
