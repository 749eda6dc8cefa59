"""Tests for mmtx.data.tokenizer: bytes and SentencePiece behind one interface."""

import pickle
import random

import numpy as np
import pytest
import sentencepiece as spm

from mmtx.data.tokenizer import (
    ByteTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
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
