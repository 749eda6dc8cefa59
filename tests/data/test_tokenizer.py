"""Tests for mmtx.data.tokenizer: bytes, SentencePiece and the published families' tokenizers
(CLIP BPE, SigLIP, tokenizer.json) behind one interface; the latter equal to their originals'
ids (fixtures from benchmarks/peers/make_tokenizer_fixtures.py)."""

import gzip
import json
import pathlib
import pickle
import random
import re

import numpy as np
import pytest
import sentencepiece as spm

from mmtx.data.tokenizer import (
    ByteTokenizer,
    ClipBpeTokenizer,
    SentencePieceTokenizer,
    SiglipTokenizer,
    Tokenizer,
    TokenizerJsonTokenizer,
    create_tokenizer,
)
from mmtx.data.tokenizer import train_sentencepiece as train_sentencepiece_model

TEXTS = ["hello", "héllo wörld ✓ 日本語 🙂", "", "a\nb\tc"]


@pytest.mark.parametrize("text", TEXTS)
def test_byte_round_trip(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert len(ids) == len(text.encode("utf-8"))
    assert all(3 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text


def test_byte_ids_are_offset_bytes():
    tok = ByteTokenizer()
    assert tok.vocab_size == 259
    assert tok.encode("A\x00é") == [65 + 3, 0 + 3, 0xC3 + 3, 0xA9 + 3]


def test_byte_bos_eos_and_decode_drops_specials():
    tok = ByteTokenizer(add_bos=True, add_eos=True)
    ids = tok.encode("ab")
    assert ids == [tok.bos_id, 97 + 3, 98 + 3, tok.eos_id]
    assert tok.decode([0, *ids, 0, 0]) == "ab"


def test_call_pads_truncates_and_masks():
    tok = ByteTokenizer()
    ids, mask = tok(["ab", "", "abcdefgh", "é"], max_length=5)
    assert ids.dtype == np.int32 and ids.shape == (4, 5)
    assert mask.dtype == np.bool_ and mask.shape == (4, 5)
    np.testing.assert_array_equal(ids[0], [100, 101, 0, 0, 0])
    np.testing.assert_array_equal(ids[1], 0)
    np.testing.assert_array_equal(ids[2], [100, 101, 102, 103, 104])  # truncated
    np.testing.assert_array_equal(mask.sum(1), [2, 0, 5, 2])  # é is two bytes
    np.testing.assert_array_equal(mask, ids != 0)
    assert tok.decode(ids[3]) == "é"


def test_call_single_string_and_errors():
    tok = ByteTokenizer()
    ids, mask = tok("hi", max_length=3)
    assert ids.shape == mask.shape == (1, 3)
    with pytest.raises(ValueError, match="max_length"):
        tok("hi", max_length=0)
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        tok(["ok", 3], max_length=4)


def sentences(n=200, seed=0):
    rng = random.Random(seed)
    subjects = ["a person", "the dog", "a red circle", "two cats", "my friend", "the horse"]
    verbs = ["rides", "sees", "jumps over", "chases", "paints", "likes"]
    objects = ["a horse", "the blue square", "green grass", "a small boat", "the river", "music"]
    return [f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}" for _ in range(n)]


def train_sentencepiece(prefix, **ids):
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences()),
        model_prefix=str(prefix),
        vocab_size=60,
        model_type="unigram",
        character_coverage=1.0,
        hard_vocab_limit=False,
        minloglevel=2,
        **ids,
    )
    return f"{prefix}.model"


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("sp") / "tiny"
    return train_sentencepiece(prefix, pad_id=0, unk_id=1, bos_id=2, eos_id=3)


def test_sentencepiece_round_trip(sp_model):
    tok = SentencePieceTokenizer(sp_model)
    assert isinstance(tok, Tokenizer)
    assert 4 < tok.vocab_size <= 60
    for text in ["a person rides a horse", "two cats chases the river", "the dog paints music"]:
        ids = tok.encode(text)
        assert ids and all(0 < i < tok.vocab_size for i in ids)  # pad id 0 is never produced
        assert tok.decode(ids) == text
        assert tok.decode([*ids, 0, 0]) == text  # padding is dropped
        assert tok.decode([2, *ids, 3]) == text  # so are bos / eos


def test_sentencepiece_call_pads_and_masks(sp_model):
    tok = SentencePieceTokenizer(sp_model)
    texts = ["a person rides a horse", "music", ""]
    ids, mask = tok(texts, max_length=6)
    assert ids.shape == mask.shape == (3, 6) and ids.dtype == np.int32
    np.testing.assert_array_equal(mask, ids != 0)
    lengths = [min(len(tok.encode(t)), 6) for t in texts]
    np.testing.assert_array_equal(mask.sum(1), lengths)
    assert lengths[1] > 0 and lengths[2] == 0
    assert tok.decode(ids[1]) == "music"


def test_create_tokenizer(sp_model):
    sp = create_tokenizer("sentencepiece", sp_model)
    assert isinstance(sp, SentencePieceTokenizer)
    assert sp.encode("the horse") == SentencePieceTokenizer(sp_model).encode("the horse")
    assert isinstance(create_tokenizer("bytes"), ByteTokenizer)
    assert isinstance(create_tokenizer(), ByteTokenizer)
    with pytest.raises(ValueError, match="model_file"):
        create_tokenizer("sentencepiece", "")
    with pytest.raises(ValueError, match="wordpiece"):
        create_tokenizer("wordpiece")


def test_sentencepiece_with_nonzero_pad_id_raises(tmp_path):
    # SentencePiece's defaults: unk 0, bos 1, eos 2, no pad (-1).
    default_ids = train_sentencepiece(tmp_path / "default")
    with pytest.raises(ValueError, match="pad id is -1"):
        SentencePieceTokenizer(default_ids)
    pad_5 = train_sentencepiece(tmp_path / "pad5", pad_id=5, unk_id=0, bos_id=1, eos_id=2)
    with pytest.raises(ValueError, match="pad id is 5"):
        create_tokenizer("sentencepiece", pad_5)


def test_sentencepiece_trained_on_the_builtin_captions_trains_a_model(tmp_path):
    """A SentencePiece model trained on the synthetic captions (mmtx's ids), loaded through
    config.tokenizer, tokenises round-trip and drives a short training run."""
    from mmtx import config as config_lib
    from mmtx.data.synthetic import SyntheticSource
    from mmtx.train.loop import train_and_evaluate

    source = SyntheticSource(split="train", seed=0, size=400)
    captions = [source[i]["caption"] for i in range(len(source))]
    model_file = train_sentencepiece_model(captions, str(tmp_path / "captions"), vocab_size=120)
    tokenizer = SentencePieceTokenizer(model_file)
    assert tokenizer.pad_id == 0 and tokenizer.vocab_size <= 120
    held_out = SyntheticSource(split="eval", seed=0, size=20)
    for i in range(len(held_out)):
        caption = held_out[i]["caption"]
        assert tokenizer.decode(tokenizer.encode(caption)) == caption
        assert len(tokenizer.encode(caption)) < len(caption.encode())  # pieces, not bytes
    assert pickle.loads(pickle.dumps(tokenizer)).encode("a red circle") == tokenizer.encode(
        "a red circle"
    )

    config = config_lib.apply_variant(config_lib.default_config(), "tiny")
    config.model.modalities = ("text", "image")
    config.tokenizer.type = "sentencepiece"
    config.tokenizer.model_file = model_file
    config.model.text.max_length = 24
    config.data.eval_size = 8
    config.train.update(steps=2, batch_size=4, eval_every=2, checkpoint_every=2)
    config.eval.batch_size = 8
    summary = train_and_evaluate(config, str(tmp_path / "run"))
    assert summary["step"] == 2 and summary["eval"]["num_examples"] == 8


# --- The published families' tokenizers, against their originals' ids --------------------------

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "tokenizers"
REFERENCE = json.loads((FIXTURES / "reference.json").read_text())
FAMILIES = {
    "clip_bpe": ClipBpeTokenizer,
    "siglip": SiglipTokenizer,
    "tokenizer_json": TokenizerJsonTokenizer,
}


def family(kind):
    return create_tokenizer(kind, str(FIXTURES / REFERENCE[kind]["file"]))


@pytest.mark.parametrize("kind", sorted(FAMILIES))
def test_family_ids_and_masks_equal_the_original(kind):
    """Every reference text (case, punctuation, unicode, whitespace, empty, too long, numbers,
    special-token strings), id for id and mask for mask."""
    tok = family(kind)
    assert isinstance(tok, FAMILIES[kind])
    ref = REFERENCE[kind]
    assert tok.vocab_size == ref["vocab_size"]
    ids, mask = tok(REFERENCE["texts"], max_length=REFERENCE["max_length"])
    assert ids.dtype == np.int32 and mask.dtype == np.bool_
    for row, text in enumerate(REFERENCE["texts"]):
        assert ids[row].tolist() == ref["ids"][row], text
        assert mask[row].tolist() == ref["mask"][row], text
    # The texts exercise padding and truncation both.
    lengths = np.asarray(REFERENCE["tokenizer_json"]["mask"]).sum(1)
    assert lengths.min() < REFERENCE["max_length"] == lengths.max()


def test_clip_bpe_layout_truncation_and_padding():
    tok = family("clip_bpe")
    ref = REFERENCE["clip_bpe"]
    assert (tok.sot_id, tok.eot_id, tok.pad_id) == (ref["sot_id"], ref["eot_id"], 0)
    assert tok.vocab_size == 256 * 2 + 2000 + 2
    length = REFERENCE["max_length"]
    long_text = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen"
    full = tok.encode(long_text)
    assert full[0] == tok.sot_id and full[-1] == tok.eot_id and len(full) > length
    ids, mask = tok(long_text, max_length=length)
    assert ids[0, :-1].tolist() == full[: length - 1] and ids[0, -1] == tok.eot_id
    assert mask.all()
    ids, mask = tok(["", "a photo of a cat"], max_length=length)
    assert ids[0, :2].tolist() == [tok.sot_id, tok.eot_id] and mask[0].sum() == 2
    # Padding is 0, which is also the id of "!": the mask, not the ids, marks padding.
    assert tok._tokenizer.token_to_id("!") == 0
    assert (ids[1][~mask[1]] == 0).all() and mask[1].sum() == 7
    assert tok(["a"], max_length=1)[0].tolist() == [[tok.eot_id]]


def test_clip_bpe_cleans_as_open_clip():
    tok = family("clip_bpe")
    # ftfy (mojibake, curly quotes, full width), HTML entities, whitespace, lowercase.
    assert tok.encode("cafÃ©") == tok.encode("café")
    assert tok.encode("“hi” ＨＩ") == tok.encode('"hi" hi')
    assert tok.encode("fish &amp;amp; chips") == tok.encode("fish & chips")
    assert tok.encode("  A\tPHOTO\n ") == tok.encode("a photo")
    assert tok.encode("ΟΔΟΣ") == tok.encode("οδος")  # str.lower: final sigma


def test_clip_bpe_plain_text_file_and_decode(tmp_path):
    plain = tmp_path / "bpe.txt"
    plain.write_bytes(gzip.decompress((FIXTURES / "clip_bpe_2000.txt.gz").read_bytes()) + b"\n")
    tok, from_gz = ClipBpeTokenizer(str(plain)), family("clip_bpe")
    assert tok.vocab_size == from_gz.vocab_size  # a trailing newline adds no token
    for text in REFERENCE["texts"]:
        assert tok.encode(text) == from_gz.encode(text)
    for text in ["a photo of two dogs !!", "héllo wörld ✓ 日本語 🙂"]:
        ids, _ = tok(text, max_length=40)
        assert tok.decode(ids[0]) == text  # start, end and padding dropped
        assert tok.decode(tok.encode(text)) == text
    # As open_clip's decode: a space after every pre-token ("</w>"), stripped at the end.
    assert tok.decode(tok.encode("it's 3.14")) == "it 's 3 . 1 4"
    assert tok.decode(tok.encode("  Two   CATS ")) == "two cats"


def test_siglip_layout_end_token_and_full_mask():
    tok = family("siglip")
    ref = REFERENCE["siglip"]
    assert tok.attends_to_padding and not Tokenizer.attends_to_padding
    assert tok.pad_id == tok.eos_id == ref["pad_id"] == ref["eos_id"] == 1  # </s>, not 0
    length = REFERENCE["max_length"]
    long_text = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen"
    ids, mask = tok([long_text, "a cat", ""], max_length=length)
    assert mask.all()  # SigLIP attends to its padding and pools the last position
    assert ids[0, -1] == tok.eos_id and ids[0, :-1].tolist() == tok.encode(long_text)[: length - 1]
    assert ids[2].tolist() == [tok.eos_id] * length
    # The reference's own attention mask (when asked for one) marks the same real tokens.
    hf_mask = np.asarray(ref["hf_attention_mask"], dtype=bool)
    real = np.asarray(ref["ids"]) != tok.pad_id
    assert (hf_mask | ~real).all()


def test_siglip_canonicalises_and_decodes():
    tok = family("siglip")
    assert tok.encode("A Photo, of TWO   dogs!!") == tok.encode("a photo of two dogs")
    assert tok.encode("hello")[-1] == tok.eos_id
    assert tok.encode("hello </s>") == tok.encode("hello")  # no second </s>
    for text in ["a photo of two dogs", "one two three", "the river 1234"]:
        assert tok.decode(tok.encode(text)) == text
        ids, _ = tok(text, max_length=40)
        assert tok.decode(ids[0]) == text  # padding (</s>) dropped
    assert tok.decode(tok.encode("The RIVER, blue!")) == "the river blue"


def test_tokenizer_json_pad_id_and_decode(tmp_path):
    tok = family("tokenizer_json")
    ref = REFERENCE["tokenizer_json"]
    assert tok.pad_id == ref["pad_id"] == REFERENCE["clip_bpe"]["eot_id"]
    # Without a padding config the pad id is 0; ids otherwise the same. The file's own
    # truncation setting is ignored (max_length rules).
    config = json.loads((FIXTURES / ref["file"]).read_text())
    config["padding"] = None
    config["truncation"] = {"direction": "Right", "max_length": 4, "strategy": "LongestFirst"}
    config["truncation"]["stride"] = 0
    no_padding = tmp_path / "tokenizer.json"
    no_padding.write_text(json.dumps(config))
    plain = TokenizerJsonTokenizer(str(no_padding))
    assert plain.pad_id == 0
    ids, mask = plain(REFERENCE["texts"], max_length=REFERENCE["max_length"])
    expected = np.where(ref["mask"], ref["ids"], 0)
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_array_equal(mask, ref["mask"])
    # encode does not truncate.
    long_text = REFERENCE["texts"][-1]
    assert len(tok.encode(long_text)) > REFERENCE["max_length"]
    for text in ["a photo of two dogs !!", "héllo wörld"]:
        ids, _ = tok(text, max_length=40)
        assert tok.decode(ids[0]) == text
    # The same vocabulary and algorithm as clip_bpe where the cleaning agrees.
    clip = family("clip_bpe")
    assert tok.encode("a photo of two dogs!!") == clip.encode("a photo of two dogs!!")


@pytest.mark.parametrize("kind", sorted(FAMILIES))
def test_family_pickles_by_file_name(kind):
    tok = family(kind)
    data = pickle.dumps(tok)
    assert len(data) < 1000  # the file name, not the model
    clone = pickle.loads(data)
    assert type(clone) is type(tok) and clone.model_file == tok.model_file
    texts = REFERENCE["texts"]
    for a, b in zip(clone(texts, 16), tok(texts, 16), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", sorted(FAMILIES))
def test_family_missing_or_wrong_file(kind, tmp_path):
    with pytest.raises(ValueError, match=f"model_file is required for tokenizer.type={kind}"):
        create_tokenizer(kind, "")
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=f"tokenizer.type={kind}: no file .*nope"):
        create_tokenizer(kind, str(missing))
    wrong = tmp_path / "wrong"
    wrong.write_bytes(b"\x00\xffnot a tokenizer file at all\n\x01 \x02 \x03\n")
    with pytest.raises(ValueError, match=re.escape(str(wrong))):
        create_tokenizer(kind, str(wrong))


def test_wrong_family_files_are_refused():
    with pytest.raises(ValueError, match=r"not a Hugging Face tokenizer\.json"):
        create_tokenizer("tokenizer_json", str(FIXTURES / "siglip_tiny.model"))
    with pytest.raises(ValueError, match=r"not CLIP's BPE merges|not a BPE merge"):
        create_tokenizer("clip_bpe", str(FIXTURES / "reference.json"))
    with pytest.raises(ValueError, match="not a SentencePiece model"):
        create_tokenizer("siglip", str(FIXTURES / "clip_tokenizer.json"))
    with pytest.raises(ValueError, match="no '</s>' piece"):
        # mmtx's own SentencePiece models (pad 0, unk 1, bos 2, eos 3) name eos "</s>" too,
        # but one trained without it is refused.
        create_tokenizer("siglip", _model_without_eos())


def _model_without_eos():
    import tempfile

    prefix = pathlib.Path(tempfile.mkdtemp()) / "no_eos"
    return train_sentencepiece(prefix, pad_id=0, unk_id=1, bos_id=-1, eos_id=-1)


def test_create_tokenizer_dispatch_and_config(tmp_path):
    from mmtx import config as config_lib

    for kind, cls in FAMILIES.items():
        config = config_lib.apply_variant(config_lib.default_config(), "tiny")
        config.tokenizer.type = kind
        config.tokenizer.model_file = str(FIXTURES / REFERENCE[kind]["file"])
        config_lib.validate(config)
        tok = create_tokenizer(config.tokenizer.type, config.tokenizer.model_file)
        assert isinstance(tok, cls) and isinstance(tok, Tokenizer)
    with pytest.raises(ValueError, match="clip_bpe, siglip, tokenizer_json"):
        create_tokenizer("clip")
