"""One config field declared once: :class:`Field`, and :func:`config_group`, which makes a
config group from a sequence of them."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import ml_collections

from mmtx.schemas.ranges import Range


@dataclasses.dataclass(frozen=True)
class Field:
    """A field of a config group: its name, its default (whose type is the field's type,
    as :func:`mmtx.config.validate` checks it), what it means and what values it allows.

    Attributes:
      name: the key in its group.
      default: the value of :func:`mmtx.config.default_config`.
      doc: what it means, for the reader of the schema.
      range: the allowed numbers (:mod:`mmtx.schemas.ranges`: ``Above(0)``,
        ``Interval(0, 1, closed="left")``; a tuple's entries one by one); ``None``: any value
        of its type.
      choices: the allowed strings, where the field names one; ``()``: not a choice.
      encoder: whether the modality's encoder takes it (:meth:`encoder_fields
        <mmtx.modalities.ModalitySpec.encoder_fields>`); False for what the input's
        preprocessing or the projection head reads.
    """

    name: str
    default: Any
    doc: str
    range: Range | None = None
    choices: tuple[str, ...] = ()
    encoder: bool = True

    def with_default(self, default: Any) -> Field:
        """This field with another default (a modality whose tower starts elsewhere)."""
        return dataclasses.replace(self, default=default)


def config_group(fields: Iterable[Field]) -> ml_collections.ConfigDict:
    """A config group of the ``fields``' defaults, in their order (the order
    ``config.json`` lists them in)."""
    group = ml_collections.ConfigDict()
    for field in fields:
        group[field.name] = field.default
    return group
