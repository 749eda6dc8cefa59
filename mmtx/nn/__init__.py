"""Flax linen building blocks with no model-level knowledge."""

from mmtx.nn.attention import ATTENTION_KERNELS, MultiHeadAttention
from mmtx.nn.embed import (
    ConvStem,
    LearnedPositionEmbedding,
    LogMelSpectrogram,
    PatchEmbed,
    TokenEmbed,
    log_mel_spectrogram,
    mel_filterbank,
    sincos_1d,
    sincos_2d,
)
from mmtx.nn.transformer import MLP, Encoder, TransformerBlock

__all__ = [
    "ATTENTION_KERNELS",
    "MLP",
    "ConvStem",
    "Encoder",
    "LearnedPositionEmbedding",
    "LogMelSpectrogram",
    "MultiHeadAttention",
    "PatchEmbed",
    "TokenEmbed",
    "TransformerBlock",
    "log_mel_spectrogram",
    "mel_filterbank",
    "sincos_1d",
    "sincos_2d",
]
