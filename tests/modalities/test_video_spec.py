"""Video through the registry (mmtx.modalities.video): config, model, raw inputs, FLOPs."""

import re

import jax
import numpy as np
import pytest
from helpers import torchvision_eval_reference

from mmtx import Model, MultiModalTransformer
from mmtx import config as config_lib
from mmtx.data import preprocessing
from mmtx.data.tokenizer import ByteTokenizer
from mmtx.modalities import get_modality
from mmtx.models import init_params
from mmtx.train import flops as flops_lib

FRAMES, SIZE = 4, 16


def video_config(layout="joint", fusion="concat"):
    config = config_lib.apply_variant(config_lib.default_config(), "tiny")
    config.model.modalities = ("text", "video")
    config.model.text.max_length = 8
    config.model.video.num_frames, config.model.video.image_size = FRAMES, SIZE
    config.model.video.layout = layout
    config.model.num_classes = 3
    config.fusion.type = fusion
    return config_lib.validate(config)


def test_sample_frames_spreads_over_the_clip():
    np.testing.assert_array_equal(preprocessing.sample_frames(8, 4), [1, 3, 5, 7])
    np.testing.assert_array_equal(preprocessing.sample_frames(2, 4), [0, 0, 1, 1])
    with pytest.raises(ValueError, match="no frames"):
        preprocessing.sample_frames(0, 4)


def test_to_video_batch_resizes_each_frame_alike():
    rng = np.random.default_rng(0)
    clip = (rng.uniform(size=(6, 20, 24, 3)) * 255).astype(np.uint8)
    one = preprocessing.to_video_batch(clip, FRAMES, SIZE)
    assert one.shape == (1, FRAMES, SIZE, SIZE, 3) and one.dtype == np.float32
    frames = preprocessing.sample_frames(6, FRAMES)
    for t, index in enumerate(frames):  # each frame as the image path makes it
        np.testing.assert_array_equal(one[0, t], preprocessing.preprocess_image(clip[index], SIZE))
    batch = preprocessing.to_video_batch([clip, clip[:3]], FRAMES, SIZE)
    assert batch.shape == (2, FRAMES, SIZE, SIZE, 3)
    with pytest.raises(ValueError, match=r"video_inputs\[1\]"):
        preprocessing.to_video_batch([clip, clip[0, 0]], FRAMES, SIZE, name="video_inputs")


@pytest.mark.parametrize("layout", ["joint", "factorised"])
def test_video_tokens_and_flops_follow_the_layout(layout):
    config = video_config(layout)
    slices, patches = FRAMES // 2, (SIZE // 8) ** 2
    tokens = slices * patches if layout == "joint" else slices
    assert config_lib.tower_tokens(config, "video") == tokens + 1  # + CLS
    count = flops_lib.analytic_flops(config, batch_size=1)
    assert count["forward"]["stem"] > 0 and count["complete"]


def test_model_with_video_raw_inputs_and_absent_clips():
    config = video_config(fusion="gated")
    module = MultiModalTransformer.from_config(config, vocab_size=ByteTokenizer().vocab_size)
    params = init_params(module, config, jax.random.key(0))
    assert params["video"]["patches"]["projection"]["kernel"].shape[:3] == (2, 8, 8)
    model = Model(module=module, params=params, config=config, tokenizer=ByteTokenizer())
    rng = np.random.default_rng(1)
    clip = rng.uniform(size=(FRAMES, SIZE, SIZE, 3)).astype(np.float32)
    out = model(text_inputs=["a red circle", "a blue star"], video_inputs=[clip, None])
    assert out["video"].shape == (2, config.model.embed_dim)
    np.testing.assert_array_equal(out["video"][1], 0.0)
    alone = model(text_inputs=["a blue star"])
    np.testing.assert_allclose(out["fused"][1], alone["fused"][0], atol=1e-5)
    assert set(out["fusion_weights"]) == {"text", "video"}


def test_video_frames_follow_the_resize_fields():
    config = video_config()
    config.model.video.update(resize="squash", interpolation="bicubic")
    config = config_lib.validate(config)
    spec = get_modality("video")
    rng = np.random.default_rng(2)
    clip = rng.integers(0, 256, size=(6, 20, 27, 3)).astype(np.uint8)
    batch = spec.from_raw([clip], config=config, tokenizer=None)["video"]
    example = spec.preprocess_example(
        clip, config=config, tokenizer=None, rng=None, augment=False, sample_rate=None
    )["video"]
    np.testing.assert_array_equal(example, batch[0])
    for t, index in enumerate(preprocessing.sample_frames(6, FRAMES)):
        expected = torchvision_eval_reference(
            clip[index], SIZE, resize="squash", interpolation="bicubic"
        )
        np.testing.assert_array_equal(np.rint(batch[0, t] * 255).astype(np.uint8), expected)
    assert "resize" not in spec.encoder_fields(config.model.video, vocab_size=0)
    config.model.video.resize = "crop"
    with pytest.raises(ValueError, match=re.escape("config.model.video.resize: 'crop' is not")):
        config_lib.validate(config)
