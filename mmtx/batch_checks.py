"""Host-side checks of a model batch, before anything is compiled: :func:`check_batch`.

The module (:class:`mmtx.models.MultiModalTransformer`) runs it on every call, where jit
traces the values and only shapes can be checked; :meth:`mmtx.Model.run` and
``python -m mmtx.embed`` run it on concrete arrays first, where each modality's value checks
apply too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from mmtx.modalities import get_modality, modality_names, present_key


def _concrete(value: Any) -> np.ndarray | None:
    """``value`` as a host array, or None when jit traces it (or it spans other hosts)."""
    if isinstance(value, jax.core.Tracer):
        return None
    if isinstance(value, jax.Array) and not value.is_fully_addressable:
        return None
    return np.asarray(value)


def check_batch(batch: Mapping[str, Any], encoders: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Checks a model batch against a model's encoders; returns the modalities it holds.

    ``batch`` is the dict of docs/design.md (per modality its input, e.g. ``text`` int
    ``[B, T]`` with ``text_mask`` bool ``[B, T]``, ``image`` float ``[B, H, W, C]``,
    ``audio`` float ``[B, S]`` with optionally ``audio_length`` int ``[B]`` in ``[0, S]``,
    ``video`` float ``[B, T, H, W, C]``; optionally
    ``present/<modality>`` bool ``[B]``); ``encoders`` is
    :attr:`mmtx.models.MultiModalTransformer.encoders`. Checked: every modality has an
    encoder, at least one is present, batch sizes agree and are nonzero, presence flags are
    ``[B]``; and
    on concrete values (not under jit, which traces them): each modality's own checks
    (:meth:`mmtx.modalities.ModalitySpec.check_values`: text ids in ``[0, vocab_size)``,
    finite pixels and samples, audio lengths within the clip) on the examples that have
    it, and every example has at least one modality. Raises ``ValueError`` (``TypeError``
    for non-integer ids or lengths) before anything is compiled. Returns the present
    modalities in registry order.
    """
    names = modality_names()
    present = [m for m in names if m in batch and batch[m] is not None]
    unsupported = [m for m in present if m not in encoders]
    if unsupported:
        raise ValueError(
            f"batch has {unsupported}, which this model has no encoder for; "
            f"its modalities are {sorted(encoders)}"
        )
    if not present:
        raise ValueError(
            f"batch has none of the model's modalities {sorted(encoders)}; got keys {sorted(batch)}"
        )
    sizes = {m: int(np.shape(batch[m])[0]) for m in present}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"modalities disagree on batch size: {sizes}")
    size = next(iter(sizes.values()))
    if size == 0:
        raise ValueError("the batch is empty (batch size 0)")
    flags: dict[str, np.ndarray | None] = {}
    for modality in present:
        key = present_key(modality)
        if key not in batch:
            continue
        if np.shape(batch[key]) != (size,):
            raise ValueError(f"{key} must be bool [{size}]; got shape {np.shape(batch[key])}")
        flags[modality] = _concrete(batch[key])
    for key in batch:
        if key.startswith("present/") and key.split("/", 1)[1] not in present:
            raise ValueError(f"batch has {key} but no {key.split('/', 1)[1]} input")
    for modality in present:
        spec = get_modality(modality)
        values = {k: _concrete(batch[k]) for k in (modality, *spec.extra_keys) if k in batch}
        if any(v is None for v in values.values()):
            continue
        rows = flags.get(modality)
        if rows is not None:
            if not rows.any():
                continue
            for key, value in values.items():  # rows are picked by the flags' [B]
                if value.shape[:1] != (size,):
                    raise ValueError(
                        f"{key} must have the batch size {size} first; got shape {value.shape}"
                    )
            values = {k: v[rows.astype(bool)] for k, v in values.items()}
        spec.check_values(values, encoders[modality])
    if flags and all(f is not None for f in flags.values()):
        covered = np.zeros((size,), bool)
        for modality in present:
            flag = flags.get(modality)
            covered |= True if flag is None else flag.astype(bool)
        if not covered.all():
            raise ValueError(
                f"example {int(np.argmin(covered))} has no modality present (every "
                "present/<modality> flag is False)"
            )
    return present
