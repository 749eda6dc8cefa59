"""The modality registry: one :class:`ModalitySpec` per modality (text, image, audio, video).

``register_modality(spec)`` adds one; see :mod:`mmtx.modalities.spec` and
docs/contributing.md.
"""

from mmtx.modalities.audio import AudioSpec
from mmtx.modalities.image import ImageSpec
from mmtx.modalities.spec import (
    LEGACY_FUSION_ORDER,
    ModalitySpec,
    fusion_order,
    get_modality,
    modality_names,
    ordered,
    present_key,
    register_modality,
    unregister_modality,
)
from mmtx.modalities.text import TextSpec
from mmtx.modalities.video import VideoSpec

# Registration order is the fusion order (and the order of contrastive pairs, metrics...).
TEXT = register_modality(TextSpec())
IMAGE = register_modality(ImageSpec())
AUDIO = register_modality(AudioSpec())
VIDEO = register_modality(VideoSpec())

__all__ = [
    "AUDIO",
    "IMAGE",
    "LEGACY_FUSION_ORDER",
    "TEXT",
    "VIDEO",
    "AudioSpec",
    "ImageSpec",
    "ModalitySpec",
    "TextSpec",
    "VideoSpec",
    "fusion_order",
    "get_modality",
    "modality_names",
    "ordered",
    "present_key",
    "register_modality",
    "unregister_modality",
]
