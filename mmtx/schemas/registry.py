"""The modality registry: one entry per modality, in registration (fusion) order.

The built-in four are registered as their schemas by :mod:`mmtx.schemas`; importing
:mod:`mmtx.modalities` registers their full specs in their place (same order), so
:func:`get_modality` returns the spec to every caller that imports :mod:`mmtx.modalities`.
:mod:`mmtx.schemas`, :mod:`mmtx.modalities` and :mod:`mmtx.modalities.spec` re-export
:data:`__all__`.
"""

from __future__ import annotations

from typing import Any

from mmtx.schemas.schema import ModalitySchema

__all__ = [
    "LEGACY_FUSION_ORDER",
    "fusion_order",
    "get_modality",
    "modality_names",
    "ordered",
    "present_key",
    "register_modality",
    "unregister_modality",
]

# The modalities whose rows the concat and gated fusions' per-modality tables had before the
# registry: a model of a subset of these keeps that 3-row layout, so its checkpoints load.
LEGACY_FUSION_ORDER = ("text", "image", "audio")


def present_key(modality: str) -> str:
    """The batch key of ``modality``'s per-example presence flags, bool ``[B]``."""
    return f"present/{modality}"


_REGISTRY: dict[str, ModalitySchema] = {}


def register_modality(spec: ModalitySchema, *, replace: bool = False) -> ModalitySchema:
    """Registers ``spec`` (a :class:`mmtx.modalities.ModalitySpec`, or a schema alone for the
    config layer) under ``spec.name``; returns it. Registration order is the fusion order;
    a replaced entry keeps its place. A config made (``mmtx.config.default_config``) after
    this has its group."""
    if not spec.name or not spec.name.isidentifier():
        raise ValueError(f"a modality needs a name that is an identifier; got {spec.name!r}")
    if spec.name in _REGISTRY and not replace:
        raise ValueError(f"modality {spec.name!r} is already registered (pass replace=True)")
    reserved = {"fused", "logits", "label", "logit_scale", "logit_bias", "index"}
    if spec.name in reserved:
        raise ValueError(f"{spec.name!r} is reserved for another batch or output key")
    _REGISTRY[spec.name] = spec
    return spec


def unregister_modality(name: str) -> None:
    """Removes a registered modality (tests that register a toy one clean up with this)."""
    _REGISTRY.pop(name, None)


def modality_names() -> tuple[str, ...]:
    """The registered modalities, in registration (fusion) order."""
    return tuple(_REGISTRY)


def get_modality(name: str) -> Any:
    """The spec registered as ``name`` (``ValueError`` naming the registered ones if none):
    a :class:`mmtx.modalities.ModalitySpec` once :mod:`mmtx.modalities` is imported (as
    every caller of its JAX side does), else possibly the modality's schema alone."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown modality {name!r}; registered: {modality_names()} "
            "(mmtx.modalities.register_modality adds one)"
        ) from None


def ordered(modalities: Any) -> list[str]:
    """The given modality names in registry order (unregistered names last, as given)."""
    names = list(modalities)
    known = [m for m in modality_names() if m in names]
    return known + [m for m in names if m not in known]


def fusion_order(modalities: Any) -> tuple[str, ...]:
    """The rows of a fusion's per-modality tables (concat's modality embeddings, gated's
    gate logits) for a model of ``modalities``: the legacy ``(text, image, audio)`` when
    every one is among those (so older checkpoints keep their shapes), else the model's
    modalities in registry order."""
    if set(modalities) <= set(LEGACY_FUSION_ORDER):
        return LEGACY_FUSION_ORDER
    return tuple(ordered(modalities))
