"""The modalities' config schemas, without JAX: one :class:`ModalitySchema` per modality
(its ``config.model.<name>`` group, checks, ranges and token count) and the modality
registry (:func:`register_modality`, :func:`get_modality`, :func:`modality_names`).

The config layer (:mod:`mmtx.config`) imports this package and nothing of jax, flax or the
encoders; :mod:`mmtx.modalities` subclasses each schema with its JAX side
(:class:`mmtx.modalities.ModalitySpec`) and registers that spec in the schema's place.
"""

from mmtx.schemas.audio import AudioSchema, audio_patch_grid, spectrogram_frames
from mmtx.schemas.image import ImageSchema
from mmtx.schemas.schema import (
    LEGACY_FUSION_ORDER,
    ModalitySchema,
    fusion_order,
    get_modality,
    modality_names,
    ordered,
    present_key,
    register_modality,
    unregister_modality,
)
from mmtx.schemas.text import TextSchema
from mmtx.schemas.video import VideoSchema

# Registration order is the fusion order; mmtx.modalities replaces each by its full spec.
register_modality(TextSchema())
register_modality(ImageSchema())
register_modality(AudioSchema())
register_modality(VideoSchema())

__all__ = [
    "LEGACY_FUSION_ORDER",
    "AudioSchema",
    "ImageSchema",
    "ModalitySchema",
    "TextSchema",
    "VideoSchema",
    "audio_patch_grid",
    "fusion_order",
    "get_modality",
    "modality_names",
    "ordered",
    "present_key",
    "register_modality",
    "spectrogram_frames",
    "unregister_modality",
]
