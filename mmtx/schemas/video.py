"""The video modality's schema: its config group, checks, token count and FLOP passes (the
encoder: :mod:`mmtx.modalities.video`)."""

from __future__ import annotations

import ml_collections

from mmtx.schemas import tower_options
from mmtx.schemas.field import Field
from mmtx.schemas.ranges import Above, AtLeast
from mmtx.schemas.schema import ModalitySchema, Require

# The tower layouts (model.video.layout).
LAYOUTS = ("joint", "factorised")


class VideoSchema(ModalitySchema):
    """Clips of ``num_frames`` square frames (see :class:`mmtx.modalities.VideoSpec`)."""

    name = "video"
    raw_input = "video_inputs"
    example_key = "video"
    poolings = ("cls", "mean", "map")
    fields = (
        Field(
            "num_frames",
            8,
            "Frames per clip fed to the model (sampled evenly from the clip).",
            range=Above(0),
        ),
        Field("image_size", 32, "Frame height and width in pixels.", range=Above(0)),
        Field(
            "patch_size",
            8,
            "Square spatial patch side; image_size must be divisible by it.",
            range=Above(0),
        ),
        Field(
            "tubelet_size",
            2,
            "Frames per tubelet; num_frames must be divisible by it.",
            range=Above(0),
        ),
        tower_options.CHANNELS,
        *tower_options.RESIZE_OPTIONS,
        tower_options.WIDTH,
        tower_options.DEPTH,
        Field(
            "temporal_depth",
            1,
            "Blocks of the temporal tower (layout factorised only; depth is then the spatial "
            "tower's).",
            range=AtLeast(0),
        ),
        tower_options.NUM_HEADS,
        tower_options.MLP_DIM,
        Field(
            "layout",
            "joint",
            "joint (one tower over all space-time tokens) | factorised (ViViT's factorised "
            "encoder: a spatial tower per time slice, then a temporal tower over the slices).",
            choices=LAYOUTS,
        ),
        tower_options.ATTENTION,
        tower_options.POOLING,
        tower_options.POSITION_EMBEDDING,
        tower_options.MEAN,
        tower_options.STD,
        *tower_options.NORMS_AND_HEAD,
    )
    # Position only nudges where a moving object's path lies (the synthetic clips).
    attributes = ("shape", "colour", "size", "motion")
    description = "video clips"
    value_range = "pixels are in [0, 1]"

    def validate(self, group: ml_collections.ConfigDict, require: Require) -> None:
        self.require_choices(group, require)
        require(
            group.image_size % group.patch_size == 0,
            "model.video.image_size",
            f"{group.image_size} is not divisible by patch_size {group.patch_size}",
        )
        require(
            group.num_frames % group.tubelet_size == 0,
            "model.video.num_frames",
            f"{group.num_frames} is not divisible by tubelet_size {group.tubelet_size}",
        )
        require(
            group.layout == "joint" or group.temporal_depth > 0,
            "model.video.temporal_depth",
            "layout='factorised' needs a temporal tower (temporal_depth >= 1)",
        )
        self.require_per_channel(group, require, ("mean", "std"))
        self.require_resize(group, require)

    def num_tokens(self, group: ml_collections.ConfigDict) -> int:
        slices = group.num_frames // group.tubelet_size
        if group.layout == "factorised":
            return slices  # the temporal tower's tokens: one per time slice
        return slices * (group.image_size // group.patch_size) ** 2

    def transformer_passes(
        self, group: ml_collections.ConfigDict, class_tokens: int
    ) -> list[tuple[int, int, int]]:
        if group.layout != "factorised":
            return super().transformer_passes(group, class_tokens)
        slices = group.num_frames // group.tubelet_size
        patches = (group.image_size // group.patch_size) ** 2
        # The spatial tower once per time slice, then the temporal tower over the slices.
        return [
            (group.depth, patches + class_tokens, slices),
            (group.temporal_depth, slices + class_tokens, 1),
        ]

    def stem_flops(self, group: ml_collections.ConfigDict) -> float:
        tubelets = (group.num_frames // group.tubelet_size) * (
            group.image_size // group.patch_size
        ) ** 2
        voxels = group.tubelet_size * group.patch_size**2 * group.channels
        return 2.0 * tubelets * voxels * group.width
