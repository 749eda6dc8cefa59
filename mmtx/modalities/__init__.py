"""The modality registry: one :class:`ModalitySpec` per modality (text, image, audio, video).

``register_modality(spec)`` adds one; see :mod:`mmtx.modalities.spec` and
docs/contributing.md. Each spec subclasses its modality's schema (:mod:`mmtx.schemas`: the
config group, checks and token count, without JAX), which the config layer reads.
"""

from mmtx.modalities.audio import AudioSpec
from mmtx.modalities.image import ImageSpec
from mmtx.modalities.spec import Headline, ModalitySpec
from mmtx.modalities.text import TextSpec
from mmtx.modalities.video import VideoSpec
from mmtx.schemas import registry
from mmtx.schemas.registry import *  # noqa: F403 (the registry's names, re-exported)
from mmtx.schemas.registry import register_modality

# Registration order is the fusion order (and the order of contrastive pairs, metrics...).
# mmtx.schemas registered each built-in's schema (for the config layer, without JAX); its
# full spec takes that schema's place here, in the same order.
TEXT = register_modality(TextSpec(), replace=True)
IMAGE = register_modality(ImageSpec(), replace=True)
AUDIO = register_modality(AudioSpec(), replace=True)
VIDEO = register_modality(VideoSpec(), replace=True)

__all__ = [
    "AUDIO",
    "IMAGE",
    "TEXT",
    "VIDEO",
    "AudioSpec",
    "Headline",
    "ImageSpec",
    "ModalitySpec",
    "TextSpec",
    "VideoSpec",
    *registry.__all__,
]
