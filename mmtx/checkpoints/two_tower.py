"""What the two-tower families (CLIP, SigLIP) share: the sizes read off a checkpoint's
tensors' shapes, each tower's config from them, and where a torch checkpoint (open_clip,
HF CLIP / SigLIP) keeps the tensors of its text tower and image encoder."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from mmtx.checkpoints import layout
from mmtx.checkpoints.tensors import CheckpointImportError, TensorSource


def grid_side(positions: int, prefix: int, what: str) -> int:
    """The side of the square patch grid of a position table ``what`` with ``positions``
    rows, ``prefix`` of them for class tokens; a :class:`CheckpointImportError` when the
    rest is not a square."""
    side = math.isqrt(positions - prefix)
    if side * side != positions - prefix:
        raise CheckpointImportError(
            f"{what} has {positions} rows, not {prefix} + a square grid of patches"
        )
    return side


@dataclasses.dataclass(frozen=True)
class TowerSizes:
    """A two-tower checkpoint's sizes, read off its tensors' shapes.

    Attributes:
      vocab_size, context_length: the text tower's token and position tables' rows.
      text_width, text_depth: its width and number of blocks.
      image_width, image_depth: the image tower's.
      patch_size, grid: the image patches' side in pixels, and how many per image side.
      embed_dim: the width of the joint embedding the text head projects to.
    """

    vocab_size: int
    context_length: int
    text_width: int
    text_depth: int
    image_width: int
    image_depth: int
    patch_size: int
    grid: int
    embed_dim: int

    @property
    def image_size(self) -> int:
        """The side in pixels of the images the position table was trained for."""
        return self.grid * self.patch_size

    def text_config(self, num_heads: int, mlp_dim: int) -> dict[str, int]:
        """The sizes of ``config.model.text``."""
        return {
            "vocab_size": self.vocab_size,
            "max_length": self.context_length,
            "width": self.text_width,
            "depth": self.text_depth,
            "num_heads": num_heads,
            "mlp_dim": mlp_dim,
        }

    def image_config(self, num_heads: int, mlp_dim: int) -> dict[str, int]:
        """The sizes of ``config.model.image``."""
        return {
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "width": self.image_width,
            "depth": self.image_depth,
            "num_heads": num_heads,
            "mlp_dim": mlp_dim,
        }


@dataclasses.dataclass(frozen=True)
class TorchNames:
    """Where a torch two-tower checkpoint keeps the tensors its sizes, text tower and image
    encoder are read from.

    Attributes:
      token_embedding, text_positions: the text tower's tables (``[vocab, D]``,
        ``[length, D]``).
      text_blocks, image_blocks: the prefix of each tower's blocks (``{prefix}{i}.``).
      text_norm, image_norm: each encoder's final LayerNorm.
      text_projection, projection_axis: the tensor the embedding width is read from, and
        its axis holding it.
      patch_embedding, image_positions: the patch convolution ``[D, C, p, p]`` and the image
        position table ``[class_tokens + grid * grid, D]``.
      class_tokens: the rows of that table before the patches'.
      block: mmtx's block parts -> the family's names (:func:`layout.torch_block`).
    """

    token_embedding: str
    text_positions: str
    text_blocks: str
    text_norm: str
    text_projection: str
    projection_axis: int
    patch_embedding: str
    image_positions: str
    class_tokens: int
    image_blocks: str
    image_norm: str
    block: Mapping[str, str]

    def sizes(self, source: TensorSource) -> TowerSizes:
        """The sizes of both towers, read off the tensors' shapes; a missing tensor ends the
        import (:meth:`TensorSource.shape`), a non-square patch grid too."""
        vocab_size, text_width = source.shape(self.token_embedding)
        context_length = source.shape(self.text_positions)[0]
        embed_dim = source.shape(self.text_projection)[self.projection_axis]
        image_width, _, patch_size, _ = source.shape(self.patch_embedding)
        positions = source.shape(self.image_positions)[0]
        grid = grid_side(positions, self.class_tokens, self.image_positions)
        return TowerSizes(
            vocab_size=vocab_size,
            context_length=context_length,
            text_width=text_width,
            text_depth=layout.torch_depth(source, self.text_blocks, self.block),
            image_width=image_width,
            image_depth=layout.torch_depth(source, self.image_blocks, self.block),
            patch_size=patch_size,
            grid=grid,
            embed_dim=embed_dim,
        )

    def mlp_dims(self, source: TensorSource) -> tuple[int, int]:
        """The text and image towers' MLP widths (the first block's ``fc1`` rows)."""
        fc1 = self.block["fc1"]
        text = source.shape(f"{self.text_blocks}0.{fc1}.weight")[0]
        image = source.shape(f"{self.image_blocks}0.{fc1}.weight")[0]
        return text, image

    def text_params(self, source: TensorSource, depth: int, num_heads: int) -> dict[str, Any]:
        """The text tower's params (:func:`layout.text_params`)."""
        return layout.text_params(
            source[self.token_embedding],
            source[self.text_positions],
            layout.torch_encoder(
                source, self.text_blocks, depth, self.block, num_heads, self.text_norm
            ),
        )

    def image_encoder(self, source: TensorSource, depth: int, num_heads: int) -> dict[str, Any]:
        """The image tower's encoder params (:func:`layout.torch_encoder`)."""
        return layout.torch_encoder(
            source, self.image_blocks, depth, self.block, num_heads, self.image_norm
        )
