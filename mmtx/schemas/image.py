"""The image modality's schema: its config group, checks, token count and stem FLOPs (the
encoder: :mod:`mmtx.modalities.image`)."""

from __future__ import annotations

import ml_collections

from mmtx.schemas import tower_options
from mmtx.schemas.field import Field
from mmtx.schemas.ranges import Above
from mmtx.schemas.schema import ModalitySchema, Require

# The patch embeddings (model.image.stem).
STEMS = ("patch", "conv")


class ImageSchema(ModalitySchema):
    """Images of ``image_size`` square pixels (see :class:`mmtx.modalities.ImageSpec`)."""

    name = "image"
    raw_input = "image_features"
    example_key = "image"
    poolings = ("cls", "mean", "map")  # map: attention pooling with a probe (SigLIP)
    fields = (
        Field("image_size", 64, "Input height and width in pixels.", range=Above(0)),
        Field(
            "patch_size",
            8,
            "Square patch side; image_size must be divisible by it.",
            range=Above(0),
        ),
        tower_options.CHANNELS,
        *tower_options.RESIZE_OPTIONS,
        Field(
            "stem",
            "patch",
            "patch (linear, ViT) | conv (3x3 stride-2 convs, ViTc).",
            choices=STEMS,
        ),
        *tower_options.SIZES,
        tower_options.ATTENTION,
        tower_options.POOLING,
        tower_options.POSITION_EMBEDDING,
        tower_options.MEAN,
        tower_options.STD,
        tower_options.PATCH_BIAS,
        tower_options.CLASS_TOKEN_POSEMB,
        *tower_options.NORMS_AND_HEAD,
    )
    attributes = ("shape", "colour", "size", "position")
    description = "images"
    value_range = "pixels are in [0, 1]"

    def validate(self, group: ml_collections.ConfigDict, require: Require) -> None:
        require(group.stem in STEMS, "model.image.stem", " | ".join(STEMS))
        self.require_choices(group, require)
        require(
            group.stem == "patch" or group.patch_size & (group.patch_size - 1) == 0,
            "model.image.patch_size",
            f"stem='conv' needs a power of two, got {group.patch_size}",
        )
        require(
            group.image_size % group.patch_size == 0,
            "model.image.image_size",
            f"{group.image_size} is not divisible by patch_size {group.patch_size}",
        )
        require(
            group.patch_bias or group.stem == "patch",
            "model.image.patch_bias",
            "False drops the bias of the patch projection, which only stem='patch' has",
        )
        self.require_per_channel(group, require, ("mean", "std"))
        self.require_resize(group, require)

    def num_tokens(self, group: ml_collections.ConfigDict) -> int:
        return (group.image_size // group.patch_size) ** 2

    def stem_flops(self, group: ml_collections.ConfigDict) -> float:
        side, channels = group.image_size, group.channels
        if group.stem == "patch":
            patches = (side // group.patch_size) ** 2
            return 2.0 * patches * group.patch_size**2 * channels * group.width
        layers = group.patch_size.bit_length() - 1
        flops, in_channels = 0.0, channels
        for i in range(layers):
            side = -(-side // 2)
            out_channels = max(group.width // 2 ** (layers - 1 - i), 8)
            flops += 2.0 * side * side * 9 * in_channels * out_channels
            in_channels = out_channels
        return flops + 2.0 * side * side * in_channels * group.width
