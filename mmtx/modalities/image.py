"""Images: a ViT (:class:`mmtx.encoders.ImageEncoder`) over ``[B, H, W, C]`` pixels."""

from __future__ import annotations

from typing import Any, Unpack

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mmtx.data import preprocessing
from mmtx.encoders import ImageEncoder
from mmtx.modalities.spec import ExampleContext, Headline, ModalitySpec, resize_options
from mmtx.schemas.image import ImageSchema


class ImageSpec(ImageSchema, ModalitySpec):
    """Images: ``image`` float32 ``[B, image_size, image_size, channels]`` in ``[0, 1]``."""

    # The selection the README and docs/usage.md show for configs/base.py (its eval lines).
    headline = Headline(
        retrieval=(
            "text_to_image_recall@1",
            "text_to_image_recall@5",
            "image_to_text_recall@1",
            "image_to_text_recall@5",
        ),
        zero_shot=("image_zero_shot_top1", "image_zero_shot_top5"),
    )

    def encoder_class(self) -> type[nn.Module]:
        return ImageEncoder

    def dummy_input(
        self, group: ml_collections.ConfigDict, batch_size: int
    ) -> dict[str, jax.Array]:
        shape = (batch_size, group.image_size, group.image_size, group.channels)
        return {"image": jnp.zeros(shape, jnp.float32)}

    def from_raw(
        self, inputs: Any, *, config: ml_collections.ConfigDict, tokenizer: Any, **options
    ) -> dict[str, np.ndarray]:
        image = config.model.image
        batch = preprocessing.to_image_batch(
            inputs,
            image.image_size,
            image.channels,
            name="image_features",
            **resize_options(image),
        )
        return {"image": batch}

    def preprocess_example(
        self, value: Any, **context: Unpack[ExampleContext]
    ) -> dict[str, np.ndarray]:
        config = context["config"]
        image = config.model.image
        crop_scale = tuple(config.data.crop_scale) if config.data.crop_scale else None
        pixels = preprocessing.preprocess_image(
            value,
            image.image_size,
            channels=image.channels,
            rng=context["rng"] if context["augment"] else None,
            crop_scale=crop_scale,
            **resize_options(image),
        )
        return {"image": pixels}
