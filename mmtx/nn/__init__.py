"""Flax linen building blocks with no model-level knowledge."""

from mmtx.nn.attention import (
    ATTENTION_KERNELS,
    CROSS_ATTENTION_KERNELS,
    IMPLEMENTATIONS,
    CrossModalAttention,
    MultiHeadAttention,
    cudnn_unsupported_reason,
    default_kernel_init,
    pallas_unsupported_reason,
    resolve_implementation,
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
from mmtx.nn.transformer import (
    ACTIVATIONS,
    MLP,
    CrossAttentionBlock,
    Encoder,
    MAPHead,
    TransformerBlock,
    quick_gelu,
)

__all__ = [
    "ACTIVATIONS",
    "ATTENTION_KERNELS",
    "CROSS_ATTENTION_KERNELS",
    "IMPLEMENTATIONS",
    "MLP",
    "ConvStem",
    "CrossAttentionBlock",
    "CrossModalAttention",
    "Encoder",
    "KaldiFbank",
    "LearnedPositionEmbedding",
    "LogMelSpectrogram",
    "MAPHead",
    "MultiHeadAttention",
    "PatchEmbed",
    "TokenEmbed",
    "TransformerBlock",
    "cudnn_unsupported_reason",
    "default_kernel_init",
    "kaldi_fbank",
    "log_mel_spectrogram",
    "mel_filterbank",
    "pallas_unsupported_reason",
    "quick_gelu",
    "resolve_implementation",
    "sincos_1d",
    "sincos_2d",
]
