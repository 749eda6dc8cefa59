"""Tests for the procedural text/image/audio/video dataset in ``mmtx.data.synthetic``.

Split disjointness is by construction: train example ``i`` is generated from
``default_rng((seed, 0, i))`` and eval example ``i`` from
``default_rng((seed, 1, EVAL_OFFSET + i))``. The split ids differ and the global indices lie in
disjoint ranges (``size <= EVAL_OFFSET``), so no eval example shares an RNG stream, and hence an
identity, with any train example. The tests below check both the keys and the generated data.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest

from mmtx.data import synthetic as syn

NUM_TRAIN = 2000
NUM_EVAL = 500
NUM_VIDEO = 500
FRAMES, VIDEO_SIZE = 8, 32


@pytest.fixture(scope="module")
def train() -> list[dict]:
    source = syn.SyntheticSource("train", seed=0)
    return [source[i] for i in range(NUM_TRAIN)]


@pytest.fixture(scope="module")
def evals() -> list[dict]:
    source = syn.SyntheticSource("eval", seed=0)
    return [source[i] for i in range(NUM_EVAL)]


@pytest.fixture(scope="module")
def videos() -> list[dict]:
    source = syn.SyntheticSource("train", seed=0, video_frames=FRAMES, video_size=VIDEO_SIZE)
    return [source[i] for i in range(NUM_VIDEO)]


def _same(a: dict, b: dict) -> bool:
    return (
        a["caption"] == b["caption"]
        and np.array_equal(a["image"], b["image"])
        and np.array_equal(a["audio"], b["audio"])
        and all(a[k] == b[k] for k in ("label", "shape", "colour", "size", "position"))
    )


# --- determinism and splits ---------------------------------------------------------------


def test_deterministic_and_order_independent():
    a = syn.SyntheticSource("train", seed=3)
    b = syn.SyntheticSource("train", seed=3)
    forward = [a[i] for i in range(20)]
    backward = [b[i] for i in reversed(range(20))][::-1]
    assert all(_same(x, y) for x, y in zip(forward, backward, strict=True))
    assert _same(a[7], a[7])
    assert _same(a[-1], a[len(a) - 1])


def test_different_indices_and_seeds_differ():
    a = syn.SyntheticSource("train", seed=0)
    b = syn.SyntheticSource("train", seed=1)
    for i in range(20):
        assert not np.array_equal(a[i]["image"], a[i + 1]["image"])
        assert not np.array_equal(a[i]["audio"], a[i + 1]["audio"])
        assert not np.array_equal(a[i]["image"], b[i]["image"])


def test_splits_are_disjoint(train, evals):
    train_src, eval_src = syn.SyntheticSource("train"), syn.SyntheticSource("eval")
    train_keys = {train_src.key(i) for i in range(NUM_TRAIN)}
    eval_keys = {eval_src.key(i) for i in range(NUM_EVAL)}
    assert not train_keys & eval_keys
    assert all(k[2] >= syn.EVAL_OFFSET for k in eval_keys)
    assert all(k[2] < syn.EVAL_OFFSET for k in train_keys)
    # Same index, different split: different example.
    for t, e in zip(train, evals, strict=False):
        assert not np.array_equal(t["image"], e["image"])
        assert not np.array_equal(t["audio"], e["audio"])
    # No eval example equals any train example at all.
    train_images = {t["image"].tobytes() for t in train}
    assert not any(e["image"].tobytes() in train_images for e in evals)


def test_len_and_indexing():
    assert len(syn.SyntheticSource("train")) == syn.DEFAULT_SIZES["train"]
    assert len(syn.SyntheticSource("eval")) == syn.DEFAULT_SIZES["eval"]
    small = syn.SyntheticSource("eval", size=10)
    assert len(small) == 10
    assert _same(small[9], syn.SyntheticSource("eval")[9])
    assert len(list(small)) == 10  # iteration stops at IndexError
    with pytest.raises(IndexError):
        small[10]
    with pytest.raises(IndexError):
        small[-11]
    with pytest.raises(ValueError):
        syn.SyntheticSource("test")
    with pytest.raises(ValueError):
        syn.SyntheticSource("train", size=syn.EVAL_OFFSET + 1)


# --- fields ---------------------------------------------------------------------------------


def test_fields(train):
    for ex in train[:200]:
        assert set(ex) == {
            "caption",
            "image",
            "audio",
            "label",
            "shape",
            "colour",
            "size",
            "position",
        }
        image, audio = ex["image"], ex["audio"]
        assert image.shape == (64, 64, 3) and image.dtype == np.float32
        assert 0.0 <= image.min() and image.max() <= 1.0
        assert audio.shape == (16000,) and audio.dtype == np.float32
        assert -1.0 <= audio.min() and audio.max() <= 1.0
        assert isinstance(ex["label"], np.int32) and ex["label"].shape == ()
        for key, n in (
            ("shape", syn.NUM_SHAPES),
            ("colour", syn.NUM_COLOURS),
            ("size", len(syn.SIZES)),
            ("position", len(syn.POSITIONS)),
        ):
            assert type(ex[key]) is int and 0 <= ex[key] < n


def test_other_sizes():
    source = syn.SyntheticSource("train", image_size=32, sample_rate=8000, audio_seconds=0.5)
    for i in range(20):
        ex = source[i]
        assert ex["image"].shape == (32, 32, 3) and ex["image"].dtype == np.float32
        assert ex["audio"].shape == (4000,) and ex["audio"].dtype == np.float32
        assert 0.0 <= ex["image"].min() and ex["image"].max() <= 1.0


def test_labels(train):
    assert syn.NUM_CLASSES == syn.NUM_SHAPES * syn.NUM_COLOURS == 64
    labels = np.array([ex["label"] for ex in train])
    expected = [ex["shape"] * syn.NUM_COLOURS + ex["colour"] for ex in train]
    np.testing.assert_array_equal(labels, expected)
    assert labels.min() >= 0 and labels.max() < syn.NUM_CLASSES
    assert len(set(labels.tolist())) == syn.NUM_CLASSES  # 2000 examples cover all classes


def _digest(examples: list[dict]) -> str:
    h = hashlib.sha256()
    for ex in examples:
        h.update(ex["caption"].encode())
        h.update(ex["image"].tobytes())
        h.update(ex["audio"].tobytes())
        attributes = [ex[k] for k in ("label", "shape", "colour", "size", "position")]
        h.update(np.asarray(attributes, np.int64).tobytes())
    return h.hexdigest()


# SHA-256 of examples as generated before video existed (commit d161cc0): without video,
# every output must stay byte-identical. (float32 image and audio bytes: pinned on x86-64.)
_PINNED = (
    (
        {"split": "train", "seed": 0},
        (0, 1, 2, 3, 4, 5, 6, 7, 999_999),
        "10ec9484e38b0fdf67aa2719121b5de51c07b8d12e6a804231c87088a9fc8fe7",
    ),
    (
        {"split": "eval", "seed": 0},
        (0, 1, 2, 1999),
        "c2cffb6a4c365fdca95edb5685ff4d3512f3edc798fa354d0295c0515d13893e",
    ),
    (
        {"split": "train", "seed": 5, "image_size": 32, "sample_rate": 8000, "audio_seconds": 0.5},
        (0, 1, 2, 3),
        "5cce9ddf374de93a0cd04904fd456e84bdb85e35e9a380e7a0cb946652398b6e",
    ),
)


@pytest.mark.parametrize("kwargs, indices, expected", _PINNED)
def test_no_video_is_byte_identical_to_before(kwargs, indices, expected):
    for extra in ({}, {"video_frames": 0}, {"video_frames": 0, "video_size": 32}):
        source = syn.SyntheticSource(**kwargs, **extra)
        examples = [source[i] for i in indices]
        assert all("video" not in ex and "motion" not in ex for ex in examples)
        assert _digest(examples) == expected, extra


def test_constants():
    assert len(syn.SHAPES) >= 8 and len(syn.COLOURS) >= 8 and len(syn.SIZES) >= 2
    assert len(syn.POSITIONS) == 9 and len(syn.TEMPLATES) >= 6
    assert syn.NUM_MOTIONS == len(syn.MOTIONS) == len(syn.MOTION_DIRECTIONS) == 4
    assert len(syn.MOTION_GLIDES) == len(set(syn.MOTION_GLIDES)) == syn.NUM_MOTIONS
    # The pitch rises for an object moving up and falls for one moving down.
    glides = dict(zip(syn.MOTIONS, syn.MOTION_GLIDES, strict=True))
    assert glides["moving upwards"] == "rise" and glides["moving downwards"] == "fall"
    assert dict(zip(syn.MOTIONS, syn.MOTION_DIRECTIONS, strict=True)) == {
        "moving leftwards": (-1, 0),
        "moving rightwards": (1, 0),
        "moving upwards": (0, -1),
        "moving downwards": (0, 1),
    }
    assert len(syn.VIDEO_TEMPLATES) >= 6
    assert syn.VIDEO_ATTRIBUTES == (*syn.ATTRIBUTES, "motion")
    assert all(len(syn.ATTRIBUTE_VALUES[k]) >= 2 for k in syn.VIDEO_ATTRIBUTES)
    for table, names in (
        (syn.SHAPE_SYNONYMS, syn.SHAPES),
        (syn.COLOUR_SYNONYMS, syn.COLOURS),
        (syn.SIZE_SYNONYMS, syn.SIZES),
        (syn.POSITION_LABELS, syn.POSITIONS),
        (syn.MOTION_SYNONYMS, syn.MOTIONS),
    ):
        assert len(table) == len(names)
        assert all(syns[0] == name for syns, name in zip(table, names, strict=True))


# --- captions -------------------------------------------------------------------------------

_TABLES = {
    "shape": syn.SHAPE_SYNONYMS,
    "colour": syn.COLOUR_SYNONYMS,
    "size": syn.SIZE_SYNONYMS,
    "position": syn.POSITION_SYNONYMS,
}
_VIDEO_TABLES = {**_TABLES, "motion": syn.MOTION_SYNONYMS}


def _parse(caption: str, table: tuple[tuple[str, ...], ...]) -> tuple[int, str, set[str]]:
    """The one value of ``table`` named in ``caption``, longest synonym first.

    Returns ``(value, caption with the synonyms replaced by '#', synonyms found)``.
    """
    text = caption.lower()
    entries = sorted(
        ((word, value) for value, words in enumerate(table) for word in words),
        key=lambda e: -len(e[0]),
    )
    values, words = set(), set()
    for word, value in entries:
        pattern = r"(?<![a-z-])" + re.escape(word) + r"(?![a-z-])"
        if re.search(pattern, text):
            values.add(value)
            words.add(word)
            text = re.sub(pattern, "#", text)
    assert len(values) == 1, (caption, values)
    return values.pop(), text, words


def test_synonyms_unambiguous():
    everything: dict[str, str] = {}
    for name, table in _VIDEO_TABLES.items():
        for words in table:
            for word in words:
                assert word == word.lower() and word.isascii()
                assert everything.setdefault(word, name) == name, word
        flat = [w for words in table for w in words]
        assert len(flat) == len(set(flat)), name  # no synonym names two values


def test_caption_length_and_ascii(train):
    for ex in train[:500]:
        data = ex["caption"].encode("utf-8")
        assert ex["caption"].isascii() and len(data) < 64, ex["caption"]
    # The fallback template fits with the longest synonyms of every table.
    longest = syn.TEMPLATES[0].format(
        size=max((w for ws in syn.SIZE_SYNONYMS for w in ws), key=len),
        colour=max((w for ws in syn.COLOUR_SYNONYMS for w in ws), key=len),
        shape=max((w for ws in syn.SHAPE_SYNONYMS for w in ws), key=len),
        where=max((w for ws in syn.POSITION_PHRASES for w in ws), key=len),
    )
    assert len(longest) <= syn.MAX_CAPTION_BYTES < 64
    longest = syn.VIDEO_TEMPLATES[0].format(
        size=max((w for ws in syn.SIZE_SYNONYMS for w in ws), key=len),
        colour=max((w for ws in syn.COLOUR_SYNONYMS for w in ws), key=len),
        shape=max((w for ws in syn.SHAPE_SYNONYMS for w in ws), key=len),
        label=max((w for ws in syn.POSITION_LABELS for w in ws), key=len),
        motion=max((w for ws in syn.MOTION_SYNONYMS for w in ws), key=len),
    )
    assert len(longest) <= syn.MAX_CAPTION_BYTES


def test_captions_state_attributes(train):
    for ex in train[:300]:
        for name, table in _TABLES.items():
            assert _parse(ex["caption"], table)[0] == ex[name], (ex["caption"], name)


def test_captions_are_varied(train):
    skeletons, used = set(), set()
    for ex in train:
        text = ex["caption"]
        for table in _TABLES.values():
            _, text, words = _parse(text, table)
            used |= words
        skeletons.add(text)
    assert len(skeletons) == len(syn.TEMPLATES)  # every template, and nothing else
    for table in _TABLES.values():
        assert used >= {w for words in table for w in words}  # every synonym is used


def test_describe(train):
    ex = train[0]
    text = syn.describe(ex)
    assert text.startswith("a ") and text.isascii()
    for name, table in _TABLES.items():
        assert _parse(text, table)[0] == ex[name]
    assert syn.describe({"shape": 0, "colour": 0, "size": 0, "position": 0}) == (
        "a small red circle in the top left"
    )
    assert syn.describe({"shape": 0, "colour": 0, "size": 0, "position": 0, "motion": 2}) == (
        "a small red circle in the top left moving upwards"
    )
    longest = max(
        (
            syn.describe({"shape": a, "colour": b, "size": 1, "position": p, "motion": m})
            for a in range(syn.NUM_SHAPES)
            for b in range(syn.NUM_COLOURS)
            for p in range(syn.NUM_POSITIONS)
            for m in range(syn.NUM_MOTIONS)
        ),
        key=len,
    )
    assert len(longest) <= syn.MAX_CAPTION_BYTES, longest


# --- image ----------------------------------------------------------------------------------


def _object_mask(image: np.ndarray) -> np.ndarray:
    background = np.median(image.reshape(-1, 3), axis=0)
    return np.linalg.norm(image - background, axis=-1) > 0.3


def test_image_encodes_attributes(train):
    rgb = np.asarray(syn.COLOUR_RGB)
    areas = {0: [], 1: []}
    colour_hits = position_hits = 0
    examples = train[:400]
    for ex in examples:
        image = ex["image"]
        mask = _object_mask(image)
        areas[ex["size"]].append(mask.sum())
        mean = image[mask].mean(axis=0)
        colour_hits += np.argmin(np.linalg.norm(rgb - mean, axis=-1)) == ex["colour"]
        ys, xs = np.nonzero(mask)
        cell = int(3 * ys.mean() / 64) * 3 + int(3 * xs.mean() / 64)
        position_hits += cell == ex["position"]
    assert colour_hits / len(examples) > 0.98
    assert position_hits / len(examples) > 0.98
    assert np.mean(areas[1]) > 2.5 * np.mean(areas[0])


def test_distractors_are_dim(train):
    # Away from the object, nothing is far from the background.
    for ex in train[:100]:
        image = ex["image"]
        background = np.median(image.reshape(-1, 3), axis=0)
        dist = np.linalg.norm(image - background, axis=-1)
        mask = _object_mask(image)
        ys, xs = np.nonzero(mask)
        far = np.ones_like(mask)
        far[max(0, ys.min() - 3) : ys.max() + 4, max(0, xs.min() - 3) : xs.max() + 4] = False
        assert dist[far].max() < 0.4


# --- audio ----------------------------------------------------------------------------------


def _count_beeps(audio: np.ndarray, sample_rate: int = 16000) -> int:
    """Counts bursts of the 5 ms mean |amplitude|, with hysteresis against ripple."""
    hop = sample_rate // 200
    frames = np.abs(audio[: len(audio) // hop * hop]).reshape(-1, hop).mean(axis=1)
    high, low = 0.5 * frames.max(), 0.25 * frames.max()
    count, on = 0, False
    for value in frames:
        if not on and value > high:
            count, on = count + 1, True
        elif on and value < low:
            on = False
    return count


def _check_audio(examples: list[dict]) -> None:
    """Pitch names the colour, the beep count the shape, loudness the size (1 s at 16 kHz)."""
    log_freqs = np.log(syn.COLOUR_FREQUENCIES)
    rms = {0: [], 1: []}
    for ex in examples:
        audio = ex["audio"]
        spectrum = np.abs(np.fft.rfft(audio))
        peak = np.argmax(spectrum[1:]) + 1  # 1 Hz per bin for a 1 s clip
        assert np.argmin(np.abs(log_freqs - np.log(peak))) == ex["colour"]
        assert _count_beeps(audio) == syn.SHAPE_BEEPS[ex["shape"]]
        rms[ex["size"]].append(np.sqrt(np.mean(audio**2)))
    assert np.mean(rms[1]) > 2 * np.mean(rms[0])


def test_audio_encodes_attributes(train):
    _check_audio(train[:300])
    assert len(set(syn.SHAPE_BEEPS)) == syn.NUM_SHAPES  # one rhythm per shape


# --- learnability ---------------------------------------------------------------------------


def _features(examples: list[dict], factor: int = 8) -> np.ndarray:
    """Images minus their median (background) colour, mean-pooled by ``factor``, flattened."""
    images = np.stack([ex["image"] for ex in examples])
    images = images - np.median(images.reshape(len(images), -1, 3), axis=1)[:, None, None]
    n, s = images.shape[0], images.shape[1] // factor
    return images.reshape(n, s, factor, s, factor, 3).mean(axis=(2, 4)).reshape(n, -1)


def test_nearest_centroid_learns_colour(train, evals):
    x_train, x_eval = _features(train), _features(evals)
    y_train = np.array([ex["colour"] for ex in train])
    y_eval = np.array([ex["colour"] for ex in evals])
    centroids = np.stack([x_train[y_train == c].mean(axis=0) for c in range(syn.NUM_COLOURS)])
    dist = ((x_eval[:, None, :] - centroids[None]) ** 2).sum(-1)
    accuracy = np.mean(dist.argmin(axis=1) == y_eval)
    assert accuracy > 0.4, accuracy  # chance is 1/8; measured 0.65


# --- video ----------------------------------------------------------------------------------


def test_video_arguments():
    source = syn.SyntheticSource("eval", size=4, image_size=32, video_frames=3)
    assert source.video_size == 32 and source.attributes == syn.VIDEO_ATTRIBUTES
    assert source[0]["video"].shape == (3, 32, 32, 3)
    assert "video_frames=3, video_size=32" in repr(source)
    plain = syn.SyntheticSource("eval", size=4, video_size=32)
    assert plain.video_size == 0 and plain.attributes == syn.ATTRIBUTES
    assert "video" not in repr(plain)
    for kwargs in ({"video_frames": 1}, {"video_frames": -2}, {"video_frames": 4, "video_size": 8}):
        with pytest.raises(ValueError, match="video_"):
            syn.SyntheticSource("train", **kwargs)


def test_video_fields_and_determinism(videos):
    for ex in videos[:100]:
        assert set(ex) == {"caption", "image", "audio", "label", *syn.VIDEO_ATTRIBUTES, "video"}
        video = ex["video"]
        assert video.shape == (FRAMES, VIDEO_SIZE, VIDEO_SIZE, 3) and video.dtype == np.float32
        assert 0.0 <= video.min() and video.max() <= 1.0
        assert type(ex["motion"]) is int and 0 <= ex["motion"] < syn.NUM_MOTIONS
    assert {ex["motion"] for ex in videos} == set(range(syn.NUM_MOTIONS))
    source = syn.SyntheticSource("train", seed=0, video_frames=FRAMES, video_size=VIDEO_SIZE)
    for i in (5, 3, NUM_VIDEO - 1):  # any order, fresh source: the same example
        again = source[i]
        assert _same(again, videos[i]) and again["motion"] == videos[i]["motion"]
        assert np.array_equal(again["video"], videos[i]["video"])
    other = syn.SyntheticSource("eval", seed=0, video_frames=FRAMES, video_size=VIDEO_SIZE)
    for i in range(10):
        assert not np.array_equal(videos[i]["video"], videos[i + 1]["video"])
        assert not np.array_equal(videos[i]["video"], other[i]["video"])
        # Pixel noise is fresh in every frame.
        assert not np.array_equal(videos[i]["video"][0], videos[i]["video"][1])


def test_video_keeps_image_label_and_attributes(train, videos):
    # The image, label and attributes are those of the example without video; the audio
    # differs only inside the beeps (same noise, a pitch glide).
    for plain, ex in zip(train[:50], videos[:50], strict=False):
        assert np.array_equal(plain["image"], ex["image"])
        assert all(plain[k] == ex[k] for k in ("label", *syn.ATTRIBUTES))
        changed = np.nonzero(plain["audio"] != ex["audio"])[0]
        beeps = syn.SHAPE_BEEPS[ex["shape"]]
        assert 0 < changed.size < 0.85 * 16000 * syn._BEEP_DUTY + beeps * 2
        assert changed.min() < 0.08 * 16000 + 2 and changed.max() < 0.95 * 16000


def _video_masks(video: np.ndarray) -> np.ndarray:
    """Per frame, the object's pixels, bool [F, S, S]: far from the frame's median (background)
    colour, with at least two such neighbours (a lone noisy pixel is not the object)."""
    background = np.median(video.reshape(len(video), -1, 3), axis=1)[:, None, None]
    far = np.linalg.norm(video - background, axis=-1) > 0.4
    padded = np.pad(far, ((0, 0), (1, 1), (1, 1)))
    size = far.shape[1]
    near = sum(padded[:, i : i + size, j : j + size] for i in range(3) for j in range(3))
    return far & (near >= 3)


def test_video_object_moves_in_frame(videos):
    rgb = np.asarray(syn.COLOUR_RGB)
    n = VIDEO_SIZE
    areas = {0: [], 1: []}
    along = {}  # (motion axis, cell along it) -> path centres
    hits = 0
    for ex in videos:
        video, masks = ex["video"], _video_masks(ex["video"])
        counts = masks.sum(axis=(1, 2))
        assert counts.min() > 0.5 * np.median(counts), ex["caption"]  # never cut off
        # Wholly in frame: nothing of the object on the outermost pixels.
        assert not (masks[:, 0].any() or masks[:, -1].any() or masks[:, :, 0].any())
        assert not masks[:, :, -1].any()
        ys, xs = np.indices((n, n)) + 0.5
        cx = (masks * xs).sum(axis=(1, 2)) / counts
        cy = (masks * ys).sum(axis=(1, 2)) / counts
        dx, dy = syn.MOTION_DIRECTIONS[ex["motion"]]
        forward = np.diff(cx * dx + cy * dy)
        sideways = (cx * dy + cy * dx) * (dx + dy)
        assert forward.min() > 1.5, (ex["caption"], forward)  # several pixels per frame
        assert forward.sum() > 0.4 * n
        assert np.ptp(sideways) < 1.0
        # Across the motion: the position's row (horizontal motion) or column (vertical).
        row, col = divmod(ex["position"], 3)
        cell = int(3 * np.mean(cy) / n) if dx else int(3 * np.mean(cx) / n)
        hits += cell == (row if dx else col)
        along.setdefault((dx != 0, col if dx else row), []).append(np.mean(cx if dx else cy))
        mean = video[masks].mean(axis=0)
        hits += np.argmin(np.linalg.norm(rgb - mean, axis=-1)) == ex["colour"]
        areas[ex["size"]].append(np.median(counts))
    assert hits >= 0.99 * 2 * len(videos)
    assert np.mean(areas[1]) > 2.5 * np.mean(areas[0])
    # Along the motion, the position's cell shifts the path towards its side of the frame.
    for horizontal in (True, False):
        low, middle, high = (np.mean(along[horizontal, k]) for k in range(3))
        assert low + 1 < middle < high - 1, (horizontal, low, middle, high)


def test_video_captions_name_motion(videos):
    skeletons, used = set(), set()
    for ex in videos:
        caption = ex["caption"]
        assert caption.isascii() and len(caption.encode()) <= syn.MAX_CAPTION_BYTES, caption
        text = caption
        for name, table in _VIDEO_TABLES.items():
            value, text, words = _parse(text, table)
            assert value == ex[name], (caption, name)
            used |= words
        skeletons.add(text)
    assert len(skeletons) == len(syn.VIDEO_TEMPLATES)  # every template, and nothing else
    assert used >= {w for words in syn.MOTION_SYNONYMS for w in words}


def _pitch_thirds(audio: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
    """Mean instantaneous frequency (Hz) of the first, middle and last third of the beeps,
    averaged over the beeps: float [3]. From the analytic signal's phase, beep edges trimmed."""
    n = len(audio)
    spectrum = np.fft.fft(audio)
    spectrum[n // 2 + 1 :] = 0
    spectrum[1 : (n + 1) // 2] *= 2
    analytic = np.fft.ifft(spectrum)
    envelope = np.convolve(np.abs(analytic), np.ones(80) / 80, mode="same")
    edges = np.diff(np.concatenate([[0], envelope > 0.5 * envelope.max(), [0]]).astype(int))
    starts, stops = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
    phase = np.unwrap(np.angle(analytic))
    thirds = []
    for start, stop in zip(starts, stops, strict=True):
        trim = (stop - start) // 6
        edges = np.linspace(start + trim, stop - trim, 4).astype(int)
        thirds.append(np.diff(phase[edges]) / np.diff(edges) * sample_rate / (2 * np.pi))
    return np.mean(thirds, axis=0)


def test_video_audio_glide_states_motion(videos):
    _check_audio(videos[:200])  # colour, shape and size still as without video
    contours = {"rise": (-1, 0, 1), "fall": (1, 0, -1), "rise-fall": (0, 1, 0)}
    contours["fall-rise"] = (1, 0, 1)
    for ex in videos[:200]:
        thirds = _pitch_thirds(ex["audio"])
        # Relative to the middle third: above (1), below (-1), within 1% (0).
        base = thirds[1] * 0.01
        shape = tuple(
            int(np.sign(t - thirds[1]) if abs(t - thirds[1]) > base else 0) for t in thirds
        )
        glide = syn.MOTION_GLIDES[ex["motion"]]
        expected = {"rise": (-1, 0, 1), "fall": (1, 0, -1)}.get(glide)
        if expected is None:  # a hump: both outer thirds below (rise-fall) or above the middle
            expected = (-1, 0, -1) if glide == "rise-fall" else (1, 0, 1)
        assert shape == expected, (ex["caption"], glide, thirds)
        # The glide stays within GLIDE_DEPTH of the colour's pitch.
        low, high = np.array(syn.COLOUR_FREQUENCIES[ex["colour"]]) * (0.98, 1.02)
        depth = 1 + syn.GLIDE_DEPTH
        assert low / depth < thirds.min() and thirds.max() < high * depth
    assert set(syn.MOTION_GLIDES) == set(contours)
