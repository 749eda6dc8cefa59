"""Flax linen building blocks with no model-level knowledge."""

from mmtx.nn.attention import (
    ATTENTION_KERNELS,
    CROSS_ATTENTION_KERNELS,
    CrossModalAttention,
    MultiHeadAttention,
    default_kernel_init,
)
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
from mmtx.nn.kaldi_fbank import KaldiFbank, kaldi_fbank
from mmtx.nn.transformer import MLP, CrossAttentionBlock, Encoder, TransformerBlock

__all__ = [
    "ATTENTION_KERNELS",
    "CROSS_ATTENTION_KERNELS",
    "MLP",
    "ConvStem",
    "CrossAttentionBlock",
    "CrossModalAttention",
    "Encoder",
    "KaldiFbank",
    "LearnedPositionEmbedding",
    "LogMelSpectrogram",
    "MultiHeadAttention",
    "PatchEmbed",
    "TokenEmbed",
    "TransformerBlock",
    "default_kernel_init",
    "kaldi_fbank",
    "log_mel_spectrogram",
    "mel_filterbank",
    "sincos_1d",
    "sincos_2d",
]
