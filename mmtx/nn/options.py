"""Handing a flax module's options on whole: the options bases of mmtx.nn
(:class:`mmtx.nn.transformer.BlockOptions`, :class:`mmtx.nn.attention.AttentionOptions`,
:class:`mmtx.nn.SpectrogramOptions`) declare each option once, and a module that inherits
one builds the module it configures with :func:`options`, never option by option."""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn


def options(module: nn.Module, kind: type[nn.Module]) -> dict[str, Any]:
    """``module``'s value of every option ``kind`` declares, by name: what builds a ``kind``
    from ``module`` (``Encoder(**options(self, EncoderOptions))``). ``module`` must be a
    ``kind``, so it has each of them (``TypeError`` otherwise). ``kind`` is any flax options
    base: :class:`mmtx.nn.transformer.BlockOptions` and its subclasses,
    :class:`mmtx.nn.attention.AttentionOptions`, :class:`mmtx.nn.SpectrogramOptions`."""
    if not isinstance(module, kind):
        raise TypeError(f"{type(module).__name__} does not inherit {kind.__name__}")
    names = [f.name for f in dataclasses.fields(kind) if f.name not in ("parent", "name")]
    return {name: getattr(module, name) for name in names}
