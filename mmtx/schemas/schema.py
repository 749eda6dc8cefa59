"""What a modality is to the config: :class:`ModalitySchema`, one per modality.

A modality's schema is its record without JAX: its name and batch keys, its config group
(``config.model.<name>``: its :attr:`~ModalitySchema.fields`, with defaults, docs and ranges),
the cross-field checks of that group, its token count and stem FLOPs.
:class:`mmtx.modalities.ModalitySpec` subclasses it with the JAX side (the encoder, the
inputs). The registry (:mod:`mmtx.schemas.registry`) holds one entry per modality; the config
layer (:mod:`mmtx.config`) reads both, so that it imports neither jax nor flax.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import ml_collections

from mmtx.schemas import tower_options
from mmtx.schemas.field import Field, config_group
from mmtx.schemas.ranges import Range

Require = Callable[[bool, str, str], None]

# The fields of a pixel modality's group (image, video) that say how a picture is made
# image_size square (:func:`mmtx.data.preprocessing.preprocess_image`'s keywords of the same
# names): the input's preprocessing, not the encoder's (:attr:`Field.encoder` is False).
RESIZE_FIELDS = tuple(field.name for field in tower_options.RESIZE_OPTIONS)


def resize_options(group: ml_collections.ConfigDict) -> dict[str, Any]:
    """The :data:`RESIZE_FIELDS` of a pixel modality's group, as the keywords of
    :func:`mmtx.data.preprocessing.preprocess_image` (and ``to_image_batch``, ...)."""
    return {name: group[name] for name in RESIZE_FIELDS}


class ModalitySchema:
    """One modality's record and config. Subclass it, set the class attributes, override the
    methods (a modality's :class:`mmtx.modalities.ModalitySpec` adds the JAX side).

    Attributes:
      name: the modality's name: its ``config.model`` group, its batch key (the encoder's
        input) and its output embedding's key.
      raw_input: the keyword of :class:`mmtx.Model` that takes its raw inputs.
      example_key: the key of a source example (synthetic or TFDS) that holds it.
      extra_keys: batch keys besides ``name`` that belong to it (``text_mask``).
      poolings: the poolings its tower allows (:class:`mmtx.encoders.Tower`).
      fields: its config group's fields in order (:class:`~mmtx.schemas.Field`: default,
        doc, range), its own and the shared ones of :mod:`mmtx.schemas.tower_options`;
        :meth:`default_config` and :attr:`ranges` are made from them.
      attributes: the synthetic scene attributes it expresses; retrieval between two
        modalities counts a hit when the retrieved item agrees on those both express.
      description: a few words for error messages and docs.
    """

    name: str = ""
    raw_input: str = ""
    example_key: str = ""
    extra_keys: tuple[str, ...] = ()
    poolings: tuple[str, ...] = ("cls", "mean")
    fields: ClassVar[tuple[Field, ...]] = ()
    attributes: tuple[str, ...] = ()
    description: str = ""
    # The largest magnitude a float input may have (:meth:`check_values`): far outside the
    # documented ranges (pixels in [0, 1], samples in about [-1, 1]), and far below where
    # float32 arithmetic in the encoder would overflow to inf.
    max_abs_input: float = 1e4
    value_range: str = ""  # the documented range of the float inputs, for messages

    # --- config ---------------------------------------------------------------------------
    def default_config(self) -> ml_collections.ConfigDict:
        """The default ``config.model.<name>`` group (its tower sizes are set by variants):
        the defaults of :attr:`fields`. A modality without ``fields`` overrides this."""
        if not self.fields:
            raise NotImplementedError(f"modality {self.name!r} declares no fields")
        return config_group(self.fields)

    @property
    def ranges(self) -> Mapping[str, Range]:
        """The numeric ranges of its fields (field -> its :class:`~mmtx.schemas.ranges.Range`),
        in the order validation checks them: its own fields', then the shared options' in
        :data:`mmtx.schemas.tower_options.SHARED`'s order. A modality without :attr:`fields` sets
        this (its own fields' ranges) instead."""
        by_name = {field.name: field for field in self.fields}
        shared = [
            by_name.pop(field.name) for field in tower_options.SHARED if field.name in by_name
        ]
        return {
            field.name: field.range
            for field in [*by_name.values(), *shared]
            if field.range is not None
        }

    def validate(self, group: ml_collections.ConfigDict, require: Require) -> None:
        """Checks that span the group's fields; ``require(ok, "model.<name>.<field>", why)``."""

    def require_per_channel(
        self, group: ml_collections.ConfigDict, require: Require, names: tuple[str, ...]
    ) -> None:
        """Checks that each field of ``names`` (``mean``, ``std``) has one entry per
        ``group.channels``; for :meth:`validate` of pixel modalities."""
        for name in names:
            require(
                len(group[name]) == group.channels,
                f"model.{self.name}.{name}",
                f"needs one entry per channel (model.{self.name}.channels={group.channels}); "
                f"got {len(group[name])}: {tuple(group[name])}",
            )

    def require_choices(self, group: ml_collections.ConfigDict, require: Require) -> None:
        """Checks that each of its :attr:`fields` that declares ``choices`` holds one of them
        (``'x' is not one of (...)``); for :meth:`validate`, before the checks that read
        those fields."""
        for field in self.fields:
            value = group[field.name]
            require(
                not field.choices or value in field.choices,
                f"model.{self.name}.{field.name}",
                f"{value!r} is not one of {field.choices}",
            )

    def require_resize(self, group: ml_collections.ConfigDict, require: Require) -> None:
        """Checks the ``resize_size`` of a pixel modality's group (:data:`RESIZE_FIELDS`): 0 or
        at least ``image_size``, and only with ``resize='shorter_side'``; for :meth:`validate`
        (:meth:`require_choices` checks ``resize``, ``interpolation`` and ``crop_offset``)."""
        prefix = f"model.{self.name}"
        require(
            group.resize_size == 0 or group.resize_size >= group.image_size,
            f"{prefix}.resize_size",
            f"the shorter side before the centre crop to image_size must be 0 (= image_size) "
            f"or >= image_size ({group.image_size}); got {group.resize_size}",
        )
        require(
            group.resize_size == 0 or group.resize == "shorter_side",
            f"{prefix}.resize_size",
            f"applies to resize='shorter_side' only (squash resizes both sides to image_size "
            f"and crops nothing): set it to 0; got {group.resize_size}",
        )

    def num_tokens(self, group: ml_collections.ConfigDict) -> int:
        """Tokens the encoder makes of one example before class tokens are prepended."""
        raise NotImplementedError

    def transformer_passes(
        self, group: ml_collections.ConfigDict, class_tokens: int
    ) -> list[tuple[int, int, int]]:
        """The encoder's transformer runs per example, for FLOP counts: ``(depth, tokens,
        times)`` each; default one run of ``group.depth`` blocks over its tokens plus the
        ``class_tokens``."""
        return [(group.depth, self.num_tokens(group) + class_tokens, 1)]

    def stem_flops(self, group: ml_collections.ConfigDict) -> float:
        """Forward FLOPs of one example's stem (embedding before the transformer)."""
        return 0.0
