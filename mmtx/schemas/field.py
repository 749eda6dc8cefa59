"""One config field declared once: :class:`Field`; a nested group of fields, :class:`Group`;
and :func:`config_group`, which makes a config group from a sequence of them."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
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

    def with_default(self, default: Any, doc: str | None = None) -> Field:
        """This field with another default (a modality whose tower starts elsewhere), and
        another ``doc`` where given."""
        return dataclasses.replace(self, default=default, doc=self.doc if doc is None else doc)


@dataclasses.dataclass(frozen=True)
class Group:
    """A group nested in a config group (``train.lora``): its name, its fields in order and
    what it holds. A group without fields holds entries the user names (``model.tasks``).

    Attributes:
      name: the key in its parent group.
      fields: its fields (and groups) in order, or a function that makes them each time a
        config is made (``data.columns``: a key per registered modality).
      doc: what it holds.
    """

    name: str
    fields: tuple[Field | Group, ...] | Callable[[], tuple[Field | Group, ...]]
    doc: str

    def members(self) -> tuple[Field | Group, ...]:
        """Its fields (and groups), in order."""
        return self.fields() if callable(self.fields) else self.fields


def config_group(fields: Iterable[Field | Group]) -> ml_collections.ConfigDict:
    """A config group of the ``fields``' defaults, in their order (the order
    ``config.json`` lists them in); a :class:`Group` becomes a nested group of its own."""
    group = ml_collections.ConfigDict()
    for field in fields:
        if isinstance(field, Group):
            group[field.name] = config_group(field.members())
        else:
            group[field.name] = field.default
    return group


def declared_ranges(
    fields: Iterable[Field | Group], prefix: str = ""
) -> Iterable[tuple[str, Range]]:
    """``(dotted path, range)`` of every field with a range among ``fields`` and the groups
    nested in them, in their order; paths start with ``prefix``."""
    for field in fields:
        if isinstance(field, Group):
            yield from declared_ranges(field.members(), f"{prefix}{field.name}.")
        elif field.range is not None:
            yield f"{prefix}{field.name}", field.range
