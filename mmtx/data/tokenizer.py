"""Tokenizers behind one small interface: UTF-8 bytes (default, no download) or SentencePiece."""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence

import numpy as np


class Tokenizer(abc.ABC):
    """Maps text to int ids and back. Id 0 is padding in every implementation."""

    pad_id: int = 0

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """Number of ids; every id is in ``[0, vocab_size)``."""

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """Text -> ids (no padding, no truncation)."""

    @abc.abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Ids -> text; padding and special ids are dropped."""

    def __call__(
        self, texts: str | Sequence[str], max_length: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Encodes, truncates to ``max_length`` and right-pads with ``pad_id``.

        Args:
          texts: one string or a sequence of ``B`` strings.
          max_length: ``T``.

        Returns:
          ``(ids int32 [B, T], mask bool [B, T])``, mask True on real tokens.
        """
        if isinstance(texts, str):
            texts = [texts]
        if max_length <= 0:
            raise ValueError(f"max_length must be positive, got {max_length}")
        ids = np.full((len(texts), max_length), self.pad_id, dtype=np.int32)
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{row}] must be a str, got {type(text).__name__}")
            encoded = self.encode(text)[:max_length]
            ids[row, : len(encoded)] = encoded
        return ids, ids != self.pad_id


class ByteTokenizer(Tokenizer):
    """UTF-8 bytes offset past three special ids: 0 pad, 1 bos, 2 eos; vocab 259.

    ``add_bos``/``add_eos`` wrap each encoded text with those ids.
    """

    num_special = 3
    bos_id = 1
    eos_id = 2

    def __init__(self, add_bos: bool = False, add_eos: bool = False):
        self.add_bos = add_bos
        self.add_eos = add_eos

    @property
    def vocab_size(self) -> int:
        return 256 + self.num_special

    def encode(self, text: str) -> list[int]:
        ids = [b + self.num_special for b in text.encode("utf-8")]
        return [self.bos_id] * self.add_bos + ids + [self.eos_id] * self.add_eos

    def decode(self, ids: Sequence[int]) -> str:
        data = bytes(int(i) - self.num_special for i in ids if int(i) >= self.num_special)
        return data.decode("utf-8", errors="replace")


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece model file; its pad id must be 0 (``--pad_id=0`` when training it)."""

    def __init__(self, model_file: str):
        import sentencepiece as spm

        self.model_file = model_file
        self._processor = spm.SentencePieceProcessor(model_file=model_file)
        if self._processor.pad_id() != 0:
            raise ValueError(
                f"{model_file}: pad id is {self._processor.pad_id()}; mmtx needs pad id 0 "
                "(train with --pad_id=0 --unk_id=1 ...)"
            )

    @property
    def vocab_size(self) -> int:
        return int(self._processor.get_piece_size())

    def encode(self, text: str) -> list[int]:
        return list(self._processor.encode(text))

    def decode(self, ids: Sequence[int]) -> str:
        return self._processor.decode([int(i) for i in ids if int(i) != self.pad_id])

    def __reduce__(self) -> tuple[type, tuple[str]]:
        # Pickled by file name (grain worker processes reload the model).
        return (SentencePieceTokenizer, (self.model_file,))


def train_sentencepiece(
    texts: Iterable[str],
    model_prefix: str,
    *,
    vocab_size: int = 1000,
    model_type: str = "unigram",
) -> str:
    """Trains a SentencePiece model on ``texts`` with the ids mmtx expects (pad 0, unk 1,
    bos 2, eos 3) and returns the model file path (``model_prefix + ".model"``).

    ``vocab_size`` is an upper bound for small corpora (``hard_vocab_limit=False``). Use the
    file as ``config.tokenizer.type = "sentencepiece"``, ``config.tokenizer.model_file``.
    """
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_prefix=str(model_prefix),
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=1.0,
        hard_vocab_limit=False,
        pad_id=0,
        unk_id=1,
        bos_id=2,
        eos_id=3,
        minloglevel=2,
    )
    return f"{model_prefix}.model"


def create_tokenizer(kind: str = "bytes", model_file: str = "") -> Tokenizer:
    """Builds a tokenizer from ``config.tokenizer`` fields (``type``, ``model_file``)."""
    if kind == "bytes":
        return ByteTokenizer()
    if kind == "sentencepiece":
        if not model_file:
            raise ValueError(
                "config.tokenizer.model_file is required for tokenizer.type=sentencepiece"
            )
        return SentencePieceTokenizer(model_file)
    raise ValueError(f"unknown config.tokenizer.type {kind!r}; use 'bytes' or 'sentencepiece'")
