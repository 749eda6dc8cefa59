"""The modalities' config schemas, without JAX: one :class:`ModalitySchema` per modality
(its ``config.model.<name>`` group, checks, ranges and token count) and the modality
registry (:mod:`mmtx.schemas.registry`: :func:`register_modality`, :func:`get_modality`,
:func:`modality_names`); each field declared once (:class:`Field`, its allowed numbers a range of
:mod:`mmtx.schemas.ranges`; the options the towers share, :mod:`mmtx.schemas.tower_options`).

The config layer (:mod:`mmtx.config`) imports this package and nothing of jax, flax or the
encoders; :mod:`mmtx.modalities` subclasses each schema with its JAX side
(:class:`mmtx.modalities.ModalitySpec`) and registers that spec in the schema's place.
"""

from mmtx.schemas import registry
from mmtx.schemas.audio import AudioSchema, audio_patch_grid, spectrogram_frames
from mmtx.schemas.field import Field, Group
from mmtx.schemas.image import ImageSchema
from mmtx.schemas.ranges import Above, AtLeast, Either, Interval, Range
from mmtx.schemas.registry import *  # noqa: F403 (the registry's names, re-exported)
from mmtx.schemas.registry import register_modality
from mmtx.schemas.schema import ModalitySchema
from mmtx.schemas.text import TextSchema
from mmtx.schemas.video import VideoSchema

# Registration order is the fusion order; mmtx.modalities replaces each by its full spec.
register_modality(TextSchema())
register_modality(ImageSchema())
register_modality(AudioSchema())
register_modality(VideoSchema())

__all__ = [
    "Above",
    "AtLeast",
    "AudioSchema",
    "Either",
    "Field",
    "Group",
    "ImageSchema",
    "Interval",
    "ModalitySchema",
    "Range",
    "TextSchema",
    "VideoSchema",
    "audio_patch_grid",
    "spectrogram_frames",
    *registry.__all__,
]
