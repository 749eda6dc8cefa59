"""Tokenizers behind one small interface.

``bytes`` (UTF-8 bytes, the default, no download) and ``sentencepiece`` (a model trained for
mmtx, pad id 0) for models trained from scratch; and the published families' own tokenizers,
read from their own files, for imported checkpoints:

- ``clip_bpe``: OpenAI CLIP's BPE (``bpe_simple_vocab_16e6.txt.gz``), ids as open_clip's
  ``SimpleTokenizer`` / ``open_clip.tokenize`` give them;
- ``siglip``: SigLIP's SentencePiece ``spiece.model``, ids as transformers' ``SiglipTokenizer``
  gives them with ``padding="max_length"``;
- ``tokenizer_json``: any Hugging Face ``tokenizer.json`` (the ``tokenizers`` library).

Each is checked id for id against its original in tests/data/test_tokenizer.py (fixtures from
benchmarks/peers/make_tokenizer_fixtures.py).
"""

from __future__ import annotations

import abc
import functools
import gzip
import html
import pathlib
import re
import string
from collections.abc import Iterable, Sequence

import numpy as np

from mmtx.config import TOKENIZER_TYPES  # the config's choices, declared with its field


class Tokenizer(abc.ABC):
    """Maps text to int ids and back.

    Rows are right-padded with ``pad_id``; the mask, not the ids, tells real tokens from
    padding (CLIP pads with 0, which is also the id of ``!``; SigLIP pads with ``</s>``).
    """

    pad_id: int = 0
    # True where the original model attends to its padding (no attention mask): the mask
    # ``__call__`` returns is then all True, so mmtx's text tower does the same.
    attends_to_padding: bool = False

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

    def encode_truncated(self, text: str, max_length: int) -> list[int]:
        """Text -> at most ``max_length`` ids, truncated as the original tokenizer does (by
        default the end is cut; families with an end token keep it last)."""
        return self.encode(text)[:max_length]

    def __call__(
        self, texts: str | Sequence[str], max_length: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Encodes, truncates to ``max_length`` and right-pads with ``pad_id``.

        Args:
          texts: one string or a sequence of ``B`` strings.
          max_length: ``T``.

        Returns:
          ``(ids int32 [B, T], mask bool [B, T])``, mask True on real tokens (all True when
          ``attends_to_padding``).
        """
        if isinstance(texts, str):
            texts = [texts]
        if max_length <= 0:
            raise ValueError(f"max_length must be positive, got {max_length}")
        ids = np.full((len(texts), max_length), self.pad_id, dtype=np.int32)
        mask = np.zeros((len(texts), max_length), dtype=bool)
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{row}] must be a str, got {type(text).__name__}")
            encoded = self.encode_truncated(text, max_length)[:max_length]
            ids[row, : len(encoded)] = encoded
            mask[row, : len(encoded)] = True
        if self.attends_to_padding:
            mask[:] = True
        return ids, mask


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


def _model_path(kind: str, model_file: str, expected: str) -> pathlib.Path:
    path = pathlib.Path(model_file)
    if not path.is_file():
        raise FileNotFoundError(
            f"tokenizer.type={kind}: no file {model_file!r} (expected {expected})"
        )
    return path


# --- OpenAI CLIP's BPE (open_clip's SimpleTokenizer) --------------------------------------------

# open_clip reads merges[1 : 49152 - 256 - 2 + 1] of the file (line 0 is a version header):
# 48894 merges, after 256 byte tokens and the same 256 with "</w>"; then its two special tokens.
_CLIP_NUM_MERGES = 49152 - 256 - 2
_CLIP_SPECIALS = ("<start_of_text>", "<end_of_text>")
# open_clip's pre-tokenizer regex (it compiles it IGNORECASE, which changes nothing on text that
# is already lowercased).
_CLIP_PATTERN = (
    "|".join(_CLIP_SPECIALS) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
)


@functools.cache
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP's byte -> printable character table (the byte-level alphabet), in CLIP's
    vocabulary order: its first 256 ids."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    bs += range(ord("®"), ord("ÿ") + 1)
    cs = list(bs)
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def _clip_clean(text: str) -> str:
    """open_clip's default ``clean="lower"``: ftfy, HTML unescaped twice, whitespace runs to
    one space, stripped, lowercased. Done in Python with the same calls (``str.split`` and
    ``str.lower`` have Python's Unicode rules, e.g. the final sigma)."""
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).strip().lower()


class ClipBpeTokenizer(Tokenizer):
    """OpenAI CLIP's byte-level BPE from its own ``bpe_simple_vocab_16e6.txt.gz`` (or the
    plain ``.txt``), run by the ``tokenizers`` library.

    Ids are open_clip's: ``<start_of_text>`` + BPE tokens + ``<end_of_text>``; a text longer
    than ``max_length`` is cut and its last id replaced by ``<end_of_text>`` (as
    ``open_clip.tokenize`` does); padding is 0. With the real file: vocab 49408, start 49406,
    end 49407. The text is cleaned as open_clip cleans it (:func:`_clip_clean`: ftfy, HTML
    unescape, whitespace, lowercase); the BPE (end-of-word suffix ``</w>``, CLIP's
    pre-tokenizer regex, byte-level alphabet) is a ``tokenizers`` ``BPE`` model.

    A special-token string typed in the text becomes that token where open_clip's regex finds
    it (not inside a run of punctuation: ``"!<end_of_text>"`` is BPE'd as punctuation and
    letters): the regex split runs first (``tokenizers`` ``Split``), then the ``BPE`` on the
    other pieces.
    """

    def __init__(self, model_file: str):
        from tokenizers import Regex, decoders, models, pre_tokenizers
        from tokenizers import Tokenizer as _HFTokenizer

        self.model_file = model_file
        expected = "OpenAI CLIP's bpe_simple_vocab_16e6.txt.gz"
        data = _model_path("clip_bpe", model_file, expected).read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        try:
            lines = data.decode("utf-8").split("\n")[1 : _CLIP_NUM_MERGES + 1]
        except UnicodeDecodeError as e:
            raise ValueError(f"{model_file}: not a UTF-8 BPE merges file ({expected})") from e
        merges = []
        for number, line in enumerate(lines, start=2):
            pair = tuple(line.split())
            if not pair:
                continue  # an empty line, e.g. a trailing newline (open_clip: an empty token)
            if len(pair) != 2:
                raise ValueError(
                    f"{model_file}: line {number} {line[:40]!r} is not a BPE merge 'a b' "
                    f"({expected})"
                )
            merges.append(pair)
        if not merges:
            raise ValueError(f"{model_file}: no BPE merges ({expected})")
        byte_chars = list(_bytes_to_unicode().values())
        tokens = [*byte_chars, *(c + "</w>" for c in byte_chars)]
        tokens += ["".join(pair) for pair in merges] + list(_CLIP_SPECIALS)
        vocab = {token: i for i, token in enumerate(tokens)}
        if len(vocab) != len(tokens):
            raise ValueError(f"{model_file}: merges repeat a token ({expected})")
        try:
            bpe = models.BPE(
                vocab=vocab,
                merges=merges,
                end_of_word_suffix="</w>",
                continuing_subword_prefix="",
                fuse_unk=False,
            )
        except Exception as e:
            raise ValueError(f"{model_file}: not CLIP's BPE merges ({expected}): {e}") from e
        # open_clip's regex keeps its matches (the pieces) and drops the rest (whitespace);
        # each piece is one word for the BPE, its bytes mapped to the byte-level alphabet.
        self._split = pre_tokenizers.Split(Regex(_CLIP_PATTERN), behavior="removed", invert=True)
        tokenizer = _HFTokenizer(bpe)
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        tokenizer.decoder = decoders.ByteLevel()
        self._tokenizer = tokenizer
        self._vocab_size = len(vocab)
        self._special_ids = {t: vocab[t] for t in _CLIP_SPECIALS}
        self.sot_id, self.eot_id = self._special_ids.values()

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    def encode(self, text: str) -> list[int]:
        """``<start_of_text>`` + BPE ids of the cleaned text + ``<end_of_text>``."""
        ids = [self.sot_id]
        words: list[str] = []
        pieces = [piece for piece, _ in self._split.pre_tokenize_str(_clip_clean(text))]
        for piece in [*pieces, None]:
            if piece is not None and piece not in self._special_ids:
                words.append(piece)
                continue
            if words:
                ids += self._tokenizer.encode(words, is_pretokenized=True).ids
                words = []
            if piece is not None:
                ids.append(self._special_ids[piece])
        return [*ids, self.eot_id]

    def encode_truncated(self, text: str, max_length: int) -> list[int]:
        ids = self.encode(text)
        if len(ids) > max_length:
            ids = ids[:max_length]
            ids[-1] = self.eot_id
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Ids up to the first ``<end_of_text>`` (padding follows it), without the specials;
        words joined by single spaces, as the cleaned text."""
        ids = [int(i) for i in ids]
        if self.eot_id in ids:
            ids = ids[: ids.index(self.eot_id)]
        text = self._tokenizer.decode([i for i in ids if i != self.sot_id])
        return text.replace("</w>", " ").strip()

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return (ClipBpeTokenizer, (self.model_file,))


# --- SigLIP's SentencePiece (transformers' SiglipTokenizer) -------------------------------------

_SPIECE_UNDERLINE = "▁"
_SIGLIP_SPECIALS = ("</s>", "<unk>")  # SiglipTokenizer's eos (= pad) and unk tokens
_SIGLIP_SPLIT = re.compile("(" + "|".join(map(re.escape, _SIGLIP_SPECIALS)) + ")")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def _siglip_canonicalize(text: str) -> str:
    """big_vision's / SiglipTokenizer's text canonicalisation: lowercase, ASCII punctuation
    removed, whitespace runs to one space, stripped."""
    text = text.lower().translate(_PUNCTUATION)
    return re.sub(r"\s+", " ", text).strip()


class SiglipTokenizer(Tokenizer):
    """SigLIP's SentencePiece ``spiece.model``, with the ids of transformers'
    ``SiglipTokenizer(vocab_file, model_input_names=["input_ids"])`` (as HF's SigLIP
    conversion builds it) called with ``padding="max_length", truncation=True``.

    The text is canonicalised (lowercase, ASCII punctuation removed, whitespace collapsed);
    ``</s>`` ends every sequence (kept last when truncating) and pads it too: ``pad_id`` is the
    id of ``</s>`` (1 in SigLIP's 32000-piece English model: pad 0 ``<pad>``, eos 1 ``</s>``,
    unk 2 ``<unk>``), not 0.

    ``attends_to_padding``: SigLIP was trained with every text padded to its full length and
    no attention mask (big_vision), and its text tower pools the *last position*, which is
    padding for any shorter text; HF's conversion makes the tokenizer return no attention mask
    for the same reason. So the mask returned here is all True: masking the padding would
    change the pooled embedding.
    """

    attends_to_padding = True

    def __init__(self, model_file: str):
        import sentencepiece as spm

        self.model_file = model_file
        path = _model_path("siglip", model_file, "SigLIP's SentencePiece spiece.model")
        try:
            self._processor = spm.SentencePieceProcessor(model_file=str(path))
        except (RuntimeError, OSError) as e:
            raise ValueError(f"{model_file}: not a SentencePiece model ({e})") from e
        ids = {t: self._processor.piece_to_id(t) for t in _SIGLIP_SPECIALS}
        for token, i in ids.items():
            if self._processor.id_to_piece(i) != token:
                raise ValueError(
                    f"{model_file}: no {token!r} piece; SigLIP's spiece.model has "
                    "<pad> 0, </s> 1, <unk> 2"
                )
        self.eos_id = self.pad_id = ids["</s>"]
        self._unk_length = len(self._processor.encode("<unk>"))

    @property
    def vocab_size(self) -> int:
        return int(self._processor.get_piece_size())

    def _pieces(self, chunk: str) -> list[str]:
        # SiglipTokenizer._tokenize: SentencePiece on "<unk>" + text, the "<unk>" pieces cut
        # (so that a leading "▁" stays its own piece).
        pieces = self._processor.encode("<unk>" + _siglip_canonicalize(chunk), out_type=str)
        return pieces[self._unk_length :] if len(pieces) >= self._unk_length else pieces

    def _content(self, text: str) -> list[int]:
        """Ids before the added ``</s>`` (SiglipTokenizer.tokenize + convert_tokens_to_ids)."""
        # Special tokens typed in the text stay tokens, the whitespace around them stripped
        # (they are AddedToken(lstrip=True, rstrip=True)); the rest is canonicalised per chunk.
        chunks = _SIGLIP_SPLIT.split(_SPIECE_UNDERLINE + text.replace(_SPIECE_UNDERLINE, " "))
        for i, chunk in enumerate(chunks):
            if chunk in _SIGLIP_SPECIALS:
                if i + 1 < len(chunks) and chunks[i + 1]:
                    chunks[i + 1] = chunks[i + 1].lstrip()
                if i > 0 and chunks[i - 1]:
                    chunks[i - 1] = chunks[i - 1].rstrip()
        tokens: list[str] = []
        for chunk in chunks:
            if chunk in _SIGLIP_SPECIALS:
                tokens.append(chunk)
            elif chunk:
                tokens.extend(self._pieces(chunk))
        if len(tokens) > 1 and tokens[0] == _SPIECE_UNDERLINE and tokens[1] in _SIGLIP_SPECIALS:
            tokens = tokens[1:]
        return [self._processor.piece_to_id(t) for t in tokens]

    def _with_eos(self, ids: list[int]) -> list[int]:
        return ids if ids and ids[-1] == self.eos_id else [*ids, self.eos_id]

    def encode(self, text: str) -> list[int]:
        return self._with_eos(self._content(text))

    def encode_truncated(self, text: str, max_length: int) -> list[int]:
        # transformers truncates the content to leave room for one </s>, then adds it.
        ids = self._content(text)
        if len(ids) + 1 > max_length:
            ids = ids[: max(max_length - 1, 0)]
        return self._with_eos(ids)[:max_length]

    def decode(self, ids: Sequence[int]) -> str:
        """Ids without ``</s>`` (end and padding) and ``<pad>``; the canonicalised text."""
        drop = {self.eos_id, self._processor.pad_id()}
        return self._processor.decode([int(i) for i in ids if int(i) not in drop])

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return (SiglipTokenizer, (self.model_file,))


# --- Any Hugging Face tokenizer.json ------------------------------------------------------------


class TokenizerJsonTokenizer(Tokenizer):
    """A Hugging Face ``tokenizer.json`` through ``tokenizers.Tokenizer.from_file``.

    Special tokens come from the file's post-processor (``encode`` adds them); truncation to
    ``max_length`` is the library's (the text's tokens are cut, the special tokens kept, as
    transformers' ``truncation=True``); ``pad_id`` is the file's
    padding ``pad_id``, or 0 when the file has no padding config. The file's own truncation
    and padding settings are otherwise ignored.
    """

    def __init__(self, model_file: str):
        from tokenizers import Tokenizer as _HFTokenizer

        self.model_file = model_file
        path = _model_path("tokenizer_json", model_file, "a Hugging Face tokenizer.json")
        try:
            tokenizer = _HFTokenizer.from_file(str(path))
        except Exception as e:
            raise ValueError(f"{model_file}: not a Hugging Face tokenizer.json ({e})") from e
        padding = tokenizer.padding
        self.pad_id = int(padding["pad_id"]) if padding else 0
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self._tokenizer = tokenizer
        self._num_special = tokenizer.num_special_tokens_to_add(is_pair=False)
        # A BPE with an end-of-word suffix (CLIP's "</w>") decodes it to a space, as
        # transformers' CLIPTokenizer does.
        self._word_suffix = getattr(tokenizer.model, "end_of_word_suffix", None) or ""

    @property
    def vocab_size(self) -> int:
        return int(self._tokenizer.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text).ids)

    def encode_truncated(self, text: str, max_length: int) -> list[int]:
        # What the library's own truncation does (without changing the tokenizer's state):
        # cut the text's tokens to leave room for the special tokens, then add them.
        encoding = self._tokenizer.encode(text, add_special_tokens=False)
        encoding.truncate(max(max_length - self._num_special, 0))
        return list(self._tokenizer.post_process(encoding).ids)[:max_length]

    def decode(self, ids: Sequence[int]) -> str:
        """Special tokens dropped, and trailing padding ids (``pad_id``)."""
        ids = [int(i) for i in ids]
        while ids and ids[-1] == self.pad_id:
            ids.pop()
        text = self._tokenizer.decode(ids, skip_special_tokens=True)
        if self._word_suffix:
            text = text.replace(self._word_suffix, " ").strip()
        return text

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return (TokenizerJsonTokenizer, (self.model_file,))


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


_MODEL_FILES = {
    "sentencepiece": (SentencePieceTokenizer, "its .model file"),
    "clip_bpe": (ClipBpeTokenizer, "CLIP's bpe_simple_vocab_16e6.txt.gz"),
    "siglip": (SiglipTokenizer, "SigLIP's spiece.model"),
    "tokenizer_json": (TokenizerJsonTokenizer, "a Hugging Face tokenizer.json"),
}


def create_tokenizer(kind: str = "bytes", model_file: str = "") -> Tokenizer:
    """Builds a tokenizer from ``config.tokenizer`` fields (``type``, ``model_file``)."""
    if kind == "bytes":
        return ByteTokenizer()
    if kind not in _MODEL_FILES:
        raise ValueError(
            f"unknown config.tokenizer.type {kind!r}; use one of {', '.join(TOKENIZER_TYPES)}"
        )
    cls, what = _MODEL_FILES[kind]
    if not model_file:
        raise ValueError(
            f"config.tokenizer.model_file is required for tokenizer.type={kind} ({what})"
        )
    return cls(model_file)
