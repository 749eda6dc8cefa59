"""Per-modality encoders: raw model inputs -> tokens ``[B, T, D]`` and a pooled ``[B, D]``.

Every encoder returns ``(tokens, out)`` where ``out`` holds named intermediates
(``"stem"``, ``"pooled"``, ``"mask"``, ``"encoded"``), big_vision style.
"""

from mmtx.encoders.audio import AudioEncoder
from mmtx.encoders.image import ImageEncoder
from mmtx.encoders.text import TextEncoder
from mmtx.encoders.tower import Tower, TowerOptions
from mmtx.encoders.video import VideoEncoder, video_num_tokens

__all__ = [
    "AudioEncoder",
    "ImageEncoder",
    "TextEncoder",
    "Tower",
    "TowerOptions",
    "VideoEncoder",
    "video_num_tokens",
]
