"""Writes tests/data/fixtures/tokenizers/: small tokenizer files and the originals' ids.

The reference for ``tokenizer.type`` ``clip_bpe``, ``siglip`` and ``tokenizer_json``
(mmtx/data/tokenizer.py; tests/data/test_tokenizer.py). Runs in its own virtualenv, not
mmtx's, with no torch::

    python3.11 -m venv /tmp/tokref
    /tmp/tokref/bin/pip install transformers==5.24.0 tokenizers sentencepiece ftfy regex \\
        numpy protobuf
    /tmp/tokref/bin/pip install --no-deps open_clip_torch==3.3.0  # its BPE file + tokenizer.py
    /tmp/tokref/bin/python benchmarks/peers/make_tokenizer_fixtures.py

Writes:
  clip_bpe_2000.txt.gz  the first 2000 merges of open_clip's packaged
                        ``bpe_simple_vocab_16e6.txt.gz`` (its header line kept, no trailing
                        newline): vocab 512 + 2000 + 2 = 2514, start 2512, end 2513.
  siglip_tiny.model     a SentencePiece unigram model with SigLIP's special-token layout
                        (<pad> 0, </s> 1, <unk> 2, no <s>; nmt_nfkc, dummy prefix: T5's
                        cc_en.32000 model, which SigLIP's English spiece.model is), trained here.
  clip_tokenizer.json   transformers' ``CLIPTokenizer`` (a ``tokenizers`` BPE) built from the
                        same 2000 merges and saved, with a padding config (pad = <|endoftext|>).
  reference.json        texts -> ids and masks at ``max_length`` from:
    clip_bpe:       open_clip 3.3.0's ``SimpleTokenizer(clip_bpe_2000.txt.gz)(texts, L)``, the
                    code of ``open_clip.tokenize``. open_clip/tokenizer.py imports torch only to
                    build its output (``torch.zeros(n, L, dtype=torch.long)`` and
                    ``torch.tensor(list)``); it is loaded here with a numpy stand-in for those
                    two calls (``_numpy_torch``), so every id comes from its own code. Mask:
                    the tokens before padding (start .. end).
    siglip:         transformers 5.24.0 ``SiglipTokenizer(siglip_tiny.model,
                    model_input_names=["input_ids"])`` (as transformers' SigLIP conversion
                    builds it) with ``padding="max_length", truncation=True``. Mask: all True
                    (the model attends to padding); ``hf_attention_mask`` records what the
                    tokenizer gives when asked for one.
    tokenizer_json: transformers' ``CLIPTokenizer`` above with ``padding="max_length",
                    truncation=True`` (input_ids, attention_mask).
  Also checked here, not stored: open_clip with the *full* packaged vocab against transformers'
  CLIPTokenizer built from the same full vocab, on the texts whose cleaning both share.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import pathlib
import re
import sys
import tempfile
import types

import numpy as np
import sentencepiece as spm
import tokenizers
import transformers
from transformers import CLIPTokenizer, SiglipTokenizer

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "data" / "fixtures" / "tokenizers"
NUM_MERGES = 2000
MAX_LENGTH = 16

TEXTS = [
    "a photo of a cat",
    "A Photo Of TWO Dogs!!",
    "  extra   whitespace\tand\nnew lines  ",
    "",
    "Numbers: 12345 and 3.14, 1,000,000 in 2024",
    "unicode: héllo wörld ✓ 日本語 🙂 naïve café",
    "it's the cat's toy; they're here, we'll see, I'd go, you've been, I'm",
    "a very long caption that keeps going and going past the maximum length of the tokens",
    "punctuation... (brackets) [square] {curly} \"quotes\" 'single' — dash – en-dash",
    "fish &amp; chips &lt;b&gt; bold",
    "“smart quotes” and ‘apostrophes’",
    "ＦＵＬＬＷＩＤＴＨ text",
    "cafÃ© mojibake",
    "ΟΔΟΣ ΣΟΦΟΣ",
    "under_score and snake_case_names",
    "▁ sentencepiece underline",
    "a photo <end_of_text> inside",
    "x!<end_of_text>y <start_of_text>",
    "hello </s> world",
    "</s> starts",
    "Upper </S> case",
    "<unk> unknown",
    "tabs\t\tand\r\nreturns",
    "x" * 40,
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen",
]

# Sentences for the SentencePiece model: a small vocabulary, with capitals, digits and
# punctuation in the training text (lowercased by SigLIP's canonicalisation before encoding).
CORPUS_WORDS = (
    "a the photo of cat dog two cats dogs person rides horse river boat small red blue green "
    "square circle music friend sees jumps over chases paints likes long caption keeps going "
    "past maximum length tokens number numbers and in here there we see go been extra "
    "whitespace new lines unicode hello world cafe naive smart quotes fish chips bold text "
    "under score snake case names sentencepiece underline inside starts upper unknown tabs "
    "returns one three four five six seven eight nine ten eleven twelve thirteen fourteen"
).split()


def _numpy_torch() -> types.ModuleType:
    """What open_clip/tokenizer.py needs of torch to run ``SimpleTokenizer.__call__``."""
    torch = types.ModuleType("torch")
    torch.long = np.int64
    torch.zeros = lambda *shape, dtype=None: np.zeros(shape, dtype=dtype)
    torch.tensor = lambda data: np.asarray(data, dtype=np.int64)
    torch.Tensor = type("Tensor", (), {})
    torch.LongTensor = type("LongTensor", (), {})
    return torch


def load_open_clip_tokenizer():
    """open_clip/tokenizer.py, loaded by path (the package's __init__ imports torch models)."""
    spec = importlib.util.find_spec("open_clip")
    package = pathlib.Path(spec.origin).parent
    sys.modules.setdefault("torch", _numpy_torch())
    module_spec = importlib.util.spec_from_file_location(
        "open_clip_tokenizer", package / "tokenizer.py"
    )
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module, package / "bpe_simple_vocab_16e6.txt.gz"


def write_small_bpe(full: pathlib.Path, path: pathlib.Path) -> list[str]:
    lines = gzip.open(full).read().decode("utf-8").split("\n")
    small = lines[: NUM_MERGES + 1]  # header + merges
    # mtime=0: the same bytes on every run.
    path.write_bytes(gzip.compress("\n".join(small).encode("utf-8"), mtime=0))
    return small[1:]


def hf_clip_tokenizer(merge_lines: list[str], byte_chars: list[str]) -> CLIPTokenizer:
    """transformers' CLIPTokenizer with open_clip's vocabulary (ids) and merges."""
    merges = [tuple(line.split()) for line in merge_lines]
    tokens = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=merges)


def train_siglip_like(path_prefix: pathlib.Path) -> str:
    rng = np.random.default_rng(0)
    sentences = []
    for _ in range(400):
        words = rng.choice(CORPUS_WORDS, size=rng.integers(3, 10))
        sentence = " ".join(words)
        if rng.random() < 0.3:
            sentence = sentence.capitalize() + rng.choice([".", "!", "?", ","])
        if rng.random() < 0.2:
            sentence += f" {rng.integers(0, 10000)}"
        sentences.append(sentence)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_prefix=str(path_prefix),
        vocab_size=200,
        model_type="unigram",
        character_coverage=1.0,
        hard_vocab_limit=False,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        pad_piece="<pad>",
        eos_piece="</s>",
        unk_piece="<unk>",
        normalization_rule_name="nmt_nfkc",
        add_dummy_prefix=True,
        num_threads=1,
        minloglevel=2,
    )
    return f"{path_prefix}.model"


def as_lists(array) -> list[list[int]]:
    return np.asarray(array).astype(np.int64).tolist()


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    open_clip_tok, full_bpe = load_open_clip_tokenizer()
    byte_chars = list(open_clip_tok.bytes_to_unicode().values())

    # --- clip_bpe: open_clip's SimpleTokenizer on the small vocab -----------------------------
    small_bpe = OUT / "clip_bpe_2000.txt.gz"
    merge_lines = write_small_bpe(full_bpe, small_bpe)
    simple = open_clip_tok.SimpleTokenizer(str(small_bpe))
    clip_ids = simple(TEXTS, context_length=MAX_LENGTH)
    clip_lengths = [
        min(len(simple.encode(t)) + 2, MAX_LENGTH) for t in TEXTS
    ]  # start + tokens + end, cut at L
    clip_mask = np.arange(MAX_LENGTH)[None] < np.asarray(clip_lengths)[:, None]
    assert simple.vocab_size == 512 + NUM_MERGES + 2, simple.vocab_size

    # --- tokenizer_json: transformers' CLIPTokenizer on the same vocab ------------------------
    hf_clip = hf_clip_tokenizer(merge_lines, byte_chars)
    hf_out = hf_clip(TEXTS, padding="max_length", truncation=True, max_length=MAX_LENGTH)
    with tempfile.TemporaryDirectory() as tmp:
        hf_clip.save_pretrained(tmp)
        saved = json.loads((pathlib.Path(tmp) / "tokenizer.json").read_text())
    saved["padding"] = {
        "strategy": "BatchLongest",
        "direction": "Right",
        "pad_to_multiple_of": None,
        "pad_id": hf_clip.pad_token_id,
        "pad_type_id": 0,
        "pad_token": hf_clip.pad_token,
    }
    (OUT / "clip_tokenizer.json").write_text(json.dumps(saved, ensure_ascii=False) + "\n")

    # The two CLIP tokenizers agree where their cleaning does (HF: NFC, whitespace, lowercase;
    # open_clip: ftfy, HTML unescape, whitespace, lowercase): a check of the ids, not stored.
    # (tokenizers' Lowercase maps each character alone: no final sigma, unlike str.lower.)
    def hf_clean(text: str) -> str:
        return "".join(c.lower() for c in " ".join(text.split()))

    shared = [i for i, t in enumerate(TEXTS) if open_clip_tok._clean_lower(t) == hf_clean(t)]
    special_free = [i for i in shared if "<end_of_text>" not in TEXTS[i]]
    hf_ids = np.asarray(hf_out["input_ids"])
    oc_ids = np.asarray(clip_ids)
    for i in special_free:
        n = int(clip_mask[i].sum())
        assert hf_ids[i, :n].tolist() == oc_ids[i, :n].tolist(), TEXTS[i]
    print(f"small vocab: open_clip == transformers CLIPTokenizer on {len(special_free)} texts")

    # Full packaged vocab: open_clip against transformers' CLIPTokenizer from the same file.
    full_lines = gzip.open(full_bpe).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    full_simple = open_clip_tok.SimpleTokenizer(str(full_bpe))
    full_hf = hf_clip_tokenizer(full_lines, byte_chars)
    assert full_simple.vocab_size == 49408 and len(full_hf) == 49408
    full_oc = full_simple([TEXTS[i] for i in special_free], context_length=77)
    full_hf_ids = full_hf(
        [TEXTS[i] for i in special_free], padding="max_length", max_length=77, truncation=True
    )["input_ids"]
    for row, i in enumerate(special_free):
        n = len(full_simple.encode(TEXTS[i])) + 2
        assert full_oc[row, :n].tolist() == full_hf_ids[row][:n], TEXTS[i]
    print(f"full vocab: open_clip == transformers CLIPTokenizer on {len(special_free)} texts")

    # --- siglip: transformers' SiglipTokenizer on a SigLIP-layout SentencePiece model ---------
    with tempfile.TemporaryDirectory() as tmp:
        model = train_siglip_like(pathlib.Path(tmp) / "siglip_tiny")
        (OUT / "siglip_tiny.model").write_bytes(pathlib.Path(model).read_bytes())
    sp_model = str(OUT / "siglip_tiny.model")
    processor = spm.SentencePieceProcessor(model_file=sp_model)
    layout = {
        "pad": processor.pad_id(),
        "eos": processor.eos_id(),
        "unk": processor.unk_id(),
        "bos": processor.bos_id(),
    }
    assert layout == {"pad": 0, "eos": 1, "unk": 2, "bos": -1}, layout
    siglip = SiglipTokenizer(vocab_file=sp_model, model_input_names=["input_ids"])
    assert siglip.pad_token_id == siglip.eos_token_id == 1
    siglip_out = siglip(TEXTS, padding="max_length", truncation=True, max_length=MAX_LENGTH)
    assert "attention_mask" not in siglip_out
    hf_mask = siglip(
        TEXTS,
        padding="max_length",
        truncation=True,
        max_length=MAX_LENGTH,
        return_attention_mask=True,
    )["attention_mask"]

    reference = {
        "about": "written by benchmarks/peers/make_tokenizer_fixtures.py; see its docstring",
        "versions": {
            "open_clip_torch": "3.3.0",
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "sentencepiece": spm.__version__,
        },
        "max_length": MAX_LENGTH,
        "texts": TEXTS,
        "clip_bpe": {
            "file": small_bpe.name,
            "vocab_size": simple.vocab_size,
            "sot_id": simple.sot_token_id,
            "eot_id": simple.eot_token_id,
            "ids": as_lists(clip_ids),
            "mask": clip_mask.tolist(),
        },
        "siglip": {
            "file": "siglip_tiny.model",
            "vocab_size": siglip.vocab_size,
            "pad_id": siglip.pad_token_id,
            "eos_id": siglip.eos_token_id,
            "ids": as_lists(siglip_out["input_ids"]),
            "mask": np.ones((len(TEXTS), MAX_LENGTH), dtype=bool).tolist(),
            "hf_attention_mask": as_lists(hf_mask),
        },
        "tokenizer_json": {
            "file": "clip_tokenizer.json",
            "vocab_size": len(hf_clip),
            "pad_id": hf_clip.pad_token_id,
            "ids": as_lists(hf_out["input_ids"]),
            "mask": np.asarray(hf_out["attention_mask"]).astype(bool).tolist(),
        },
    }
    text = json.dumps(reference, ensure_ascii=False, indent=1)
    # One line per row of ids / mask.
    scalar = r"(?:-?\d+|true|false)"
    text = re.sub(
        rf"\[\n\s*({scalar}(?:,\n\s*{scalar})*)\n\s*\]",
        lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]",
        text,
    )
    (OUT / "reference.json").write_text(text + "\n")
    for path in sorted(OUT.iterdir()):
        print(f"{path.relative_to(ROOT)}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
