"""Video: a ViViT (:class:`mmtx.encoders.VideoEncoder`) over ``[B, T, H, W, C]`` clips."""

from __future__ import annotations

from typing import Any, Unpack

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mmtx.data import preprocessing
from mmtx.modalities.spec import ExampleContext, ModalitySpec, resize_options
from mmtx.schemas.video import VideoSchema


class VideoSpec(VideoSchema, ModalitySpec):
    """Clips: ``video`` float32 ``[B, num_frames, image_size, image_size, channels]`` in
    ``[0, 1]``, embedded as ``tubelet_size x patch_size x patch_size`` tubelets."""

    def encoder_class(self) -> type[nn.Module]:
        from mmtx.encoders import VideoEncoder

        return VideoEncoder

    def dummy_input(
        self, group: ml_collections.ConfigDict, batch_size: int
    ) -> dict[str, jax.Array]:
        shape = (batch_size, group.num_frames, group.image_size, group.image_size, group.channels)
        return {"video": jnp.zeros(shape, jnp.float32)}

    def from_raw(
        self, inputs: Any, *, config: ml_collections.ConfigDict, tokenizer: Any, **options
    ) -> dict[str, np.ndarray]:
        video = config.model.video
        batch = preprocessing.to_video_batch(
            inputs,
            video.num_frames,
            video.image_size,
            video.channels,
            name="video_inputs",
            **resize_options(video),
        )
        return {"video": batch}

    def preprocess_example(
        self, value: Any, **context: Unpack[ExampleContext]
    ) -> dict[str, np.ndarray]:
        video = context["config"].model.video
        clip = preprocessing.preprocess_video(
            value,
            video.num_frames,
            video.image_size,
            channels=video.channels,
            **resize_options(video),
        )
        return {"video": clip}
