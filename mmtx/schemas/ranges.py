"""The numbers a config field allows (:attr:`Field.range <mmtx.schemas.Field.range>`): a lower
bound (:class:`Above`, :class:`AtLeast`), an :class:`Interval`, or one value besides a range
(:class:`Either`).

Each has ``contains(value)``, and prints as the validation messages write it: ``> 0``,
``>= 0``, ``[0, 1)``, ``-1 or > 0`` (``config.train.steps: must be > 0; got 0``).
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Literal

Number = int | float


class Range(abc.ABC):
    """The numbers a field allows; a tuple field's entries are checked one by one."""

    @abc.abstractmethod
    def contains(self, value: Number) -> bool:
        """Whether ``value`` is allowed (NaN never is)."""

    @abc.abstractmethod
    def __str__(self) -> str:
        """The range as messages write it (``> 0``, ``[0, 1)``)."""


@dataclasses.dataclass(frozen=True)
class Above(Range):
    """Every number greater than ``low``: ``> low``."""

    low: Number

    def contains(self, value: Number) -> bool:
        """Whether ``value > low``."""
        return value > self.low

    def __str__(self) -> str:
        return f"> {self.low}"


@dataclasses.dataclass(frozen=True)
class AtLeast(Range):
    """``low`` and every number greater: ``>= low``."""

    low: Number

    def contains(self, value: Number) -> bool:
        """Whether ``value >= low``."""
        return value >= self.low

    def __str__(self) -> str:
        return f">= {self.low}"


@dataclasses.dataclass(frozen=True)
class Interval(Range):
    """The numbers between ``low`` and ``high``; ``closed`` says which ends belong to it (as
    pandas' ``Interval``): ``"left"`` is ``[low, high)``, ``"right"`` ``(low, high]``,
    ``"both"`` ``[low, high]``, ``"neither"`` ``(low, high)``."""

    low: Number
    high: Number
    closed: Literal["left", "right", "both", "neither"]

    def __post_init__(self) -> None:
        if self.closed not in ("left", "right", "both", "neither"):
            raise ValueError(
                f"closed must be 'left', 'right', 'both' or 'neither'; got {self.closed!r}"
            )

    def contains(self, value: Number) -> bool:
        """Whether ``value`` lies between the ends, each included where ``closed`` says."""
        above_low = value >= self.low if self.closed in ("left", "both") else value > self.low
        below_high = value <= self.high if self.closed in ("right", "both") else value < self.high
        return above_low and below_high

    def __str__(self) -> str:
        left = "[" if self.closed in ("left", "both") else "("
        right = "]" if self.closed in ("right", "both") else ")"
        return f"{left}{self.low}, {self.high}{right}"


@dataclasses.dataclass(frozen=True)
class Either(Range):
    """The one number ``value`` (a sentinel such as -1 = auto) or any number of ``range``:
    ``value or range``."""

    value: Number
    range: Range

    def contains(self, value: Number) -> bool:
        """Whether ``value`` is the sentinel or lies in the range."""
        return value == self.value or self.range.contains(value)

    def __str__(self) -> str:
        return f"{self.value} or {self.range}"
