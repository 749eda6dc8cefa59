"""Tests for mmtx.config: schema, variants, strict overrides, loading and validation."""

import json
import pathlib
import re
import subprocess
import sys

import jax
import ml_collections
import pytest
from helpers import set_dotted
from helpers import tiny_config as tiny

import mmtx
from mmtx import config as config_lib
from mmtx.models import MultiModalTransformer, dummy_batch
from mmtx.schemas import Group, Interval

REPO = pathlib.Path(__file__).resolve().parents[1]
BASE_PY = REPO / "configs" / "base.py"


# What a config layer must not import: it is data (issue 30).
HEAVY_MODULES = ("jax", "jaxlib", "flax", "grain", "tensorflow")


def test_import_and_field_errors_need_no_jax():
    # A fresh interpreter: this test process has long imported jax.
    code = f"""
import sys
import mmtx.config as config_lib
heavy = lambda: [m for m in {HEAVY_MODULES!r} if m in sys.modules]
print(heavy())
config = config_lib.default_config()
config.model.text.width = 0
try:
    config_lib.validate(config)
except ValueError as error:
    print(error)
print(heavy())
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    imported, error, after_validate = result.stdout.splitlines()
    assert imported == "[]", f"import mmtx.config imported {imported}"
    assert error == "config.model.text.width: must be > 0; got 0"
    assert after_validate == "[]", f"a range error imported {after_validate}"


def test_default_config_validates():
    config = config_lib.default_config()
    assert config_lib.validate(config) is config


@pytest.mark.parametrize("name", sorted(config_lib.VARIANTS))
def test_every_variant_validates(name):
    config = config_lib.validate(config_lib.apply_variant(config_lib.default_config(), name))
    variant = config_lib.VARIANTS[name]
    assert config.variant == name
    assert config.model.embed_dim == variant["embed_dim"]
    for modality in config_lib.MODALITIES:
        for field, value in variant["tower"].items():
            assert config.model[modality][field] == value, (modality, field)
    for field, value in variant["fusion"].items():
        assert config.fusion[field] == value, field


def test_unknown_variant_raises():
    with pytest.raises(ValueError, match="huge"):
        config_lib.apply_variant(config_lib.default_config(), "huge")


def test_merge_overrides_merges_nested_values():
    config = config_lib.default_config()
    out = config_lib.merge_overrides(
        config,
        {
            "model": {"text": {"width": 64}, "audio": {"patch_size": [8, 8]}},
            "fusion": {"type": "gated"},
        },
    )
    assert out is config
    assert config.model.text.width == 64
    assert config.model.text.depth == config_lib.default_config().model.text.depth  # untouched
    assert config.model.audio.patch_size == (8, 8)  # JSON lists become the schema's tuples
    assert isinstance(config.model.audio.patch_size, tuple)
    assert config.fusion.type == "gated"


@pytest.mark.parametrize(
    "overrides,path,hint",
    [
        ({"modle": {}}, "modle", "model"),
        ({"model": {"text": {"widht": 3}}}, "model.text.widht", "model.text.width"),
        ({"train": {"stpes": 3}}, "train.stpes", "train.steps"),
        ({"model": {"text": {"zzzz": 3}}}, "model.text.zzzz", None),
    ],
)
def test_merge_overrides_rejects_unknown_keys(overrides, path, hint):
    with pytest.raises(KeyError) as info:
        config_lib.merge_overrides(config_lib.default_config(), overrides)
    message = info.value.args[0]
    assert repr(path) in message  # the full dotted path, quoted
    if hint is None:
        assert "did you mean" not in message
    else:
        assert f"did you mean {hint!r}?" in message


def test_merge_overrides_rejects_scalar_for_group():
    with pytest.raises(TypeError, match=re.escape("'model.text' is a group")):
        config_lib.merge_overrides(config_lib.default_config(), {"model": {"text": 5}})


def test_merge_overrides_skips_retired_keys_of_older_saved_configs():
    saved = {"train": {"inject_nan_at_step": -1, "steps": 7}}
    config = config_lib.merge_overrides(config_lib.default_config(), saved)
    assert config.train.steps == 7 and "inject_nan_at_step" not in config.train
    with pytest.raises(KeyError, match="inject_nan_at_step"):  # only at its old place
        config_lib.merge_overrides(config_lib.default_config(), {"inject_nan_at_step": -1})


def test_merge_overrides_rejects_wrong_type():
    with pytest.raises(TypeError):
        config_lib.merge_overrides(config_lib.default_config(), {"model": {"embed_dim": "big"}})


def test_load_config_py_without_arg():
    config = config_lib.load_config(str(BASE_PY))
    assert isinstance(config, ml_collections.ConfigDict)
    assert config.variant == "small"
    assert config.model.text.width == config_lib.VARIANTS["small"]["tower"]["width"]


def test_load_config_py_with_arg():
    config = config_lib.load_config(f"{BASE_PY}:tiny")
    assert config.variant == "tiny"
    assert config.model.image.width == config_lib.VARIANTS["tiny"]["tower"]["width"]
    assert tuple(config.model.modalities) == ("text", "image", "audio")


def test_load_config_accepts_pathlike_and_relative(monkeypatch):
    monkeypatch.chdir(REPO)
    assert config_lib.load_config(BASE_PY).variant == "small"
    assert config_lib.load_config("configs/base.py:large").variant == "large"


def test_load_config_from_configdict_copies_and_validates():
    original = tiny()
    loaded = config_lib.load_config(original)
    assert loaded is not original
    loaded.model.text.width = 8
    assert original.model.text.width == 32
    bad = tiny()
    bad.train.steps = 0
    with pytest.raises(ValueError, match=re.escape("config.train.steps:")):
        config_lib.load_config(bad)


def test_load_config_json(tmp_path):
    path = tmp_path / "model.json"
    path.write_text(json.dumps({"model": {"embed_dim": 16, "modalities": ["text"]}}))
    config = config_lib.load_config(str(path))
    assert config.model.embed_dim == 16
    assert config.model.modalities == ("text",)
    assert config.model.text.width == config_lib.default_config().model.text.width


def test_load_config_shipped_json():
    config = config_lib.load_config(REPO / "configs" / "base_text_image_model.json")
    assert tuple(config.model.modalities) == ("text", "image")


def test_load_config_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape("nope.py")):
        config_lib.load_config(str(tmp_path / "nope.py"))
    with pytest.raises(FileNotFoundError):
        config_lib.load_config(str(tmp_path / "nope.py:tiny"))
    yaml = tmp_path / "c.yaml"
    yaml.write_text("model: {}\n")
    with pytest.raises(config_lib.ConfigFileError, match=r"not valid JSON \(line 1, column 1"):
        config_lib.load_config(str(yaml))


def test_only_py_config_files_are_executed(tmp_path):
    """Any other name is read as JSON, whatever its case or an :arg after it."""
    marker = tmp_path / "MARKER"
    payload = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
    payload += "def get_config(arg=None):\n    return None\n"
    for name in ("x.json", "X.JSON", "x.Json", "x"):
        (tmp_path / name).write_text(payload)
        with pytest.raises(config_lib.ConfigFileError, match="not valid JSON"):
            config_lib.load_config(tmp_path / name)
    with pytest.raises(config_lib.ConfigFileError, match=r"only a Python \(\.py\) config"):
        config_lib.load_config(f"{tmp_path / 'x.json'}:arg")
    with pytest.raises(config_lib.ConfigFileError, match="not UTF-8"):
        (tmp_path / "b.json").write_bytes(b"\xff\xfe{}")
        config_lib.load_config(tmp_path / "b.json")
    assert not marker.exists()
    # A Python config is one whose name ends in .py, in any case.
    (tmp_path / "C.PY").write_text(
        "from mmtx import config\ndef get_config(arg=None):\n    return config.default_config()\n"
    )
    assert config_lib.load_config(tmp_path / "C.PY").model.embed_dim > 0
    assert config_lib.is_python_config("a/b.Py:tiny") and not config_lib.is_python_config("x.json")
    top_list = tmp_path / "list.json"
    top_list.write_text("[1, 2]")
    with pytest.raises(config_lib.ConfigFileError, match="object at the top level"):
        config_lib.load_config(str(top_list))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model": {"text": {"width": 30}}}))  # 4 heads
    with pytest.raises(ValueError, match=re.escape("config.model.text.width:")):
        config_lib.load_config(str(bad))


BAD_VALUES = [
    # (dotted field to set, bad value, field the error must name)
    ("model.embed_dim", -1, "model.embed_dim"),
    ("model.num_classes", -1, "model.num_classes"),
    ("model.text.width", -32, "model.text.width"),
    ("model.text.depth", -1, "model.text.depth"),
    ("model.image.num_heads", 0, "model.image.num_heads"),
    ("model.audio.mlp_dim", -64, "model.audio.mlp_dim"),
    ("fusion.width", -32, "fusion.width"),
    ("fusion.depth", -1, "fusion.depth"),
    ("model.text.max_length", 0, "model.text.max_length"),
    ("model.text.width", 33, "model.text.width"),  # not divisible by 2 heads
    ("fusion.num_heads", 3, "fusion.width"),  # 32 not divisible by 3
    ("fusion.cross_attention", "local", "fusion.cross_attention"),
    ("fusion.num_bottlenecks", 0, "fusion.num_bottlenecks"),
    ("fusion.num_latents", -4, "fusion.num_latents"),
    ("fusion.latent_layers", 0, "fusion.latent_layers"),
    ("model.text.attention", "sparse", "model.text.attention"),
    ("model.image.attention", "flash", "model.image.attention"),
    ("fusion.attention", "linear_typo", "fusion.attention"),
    ("model.image.image_size", 60, "model.image.image_size"),  # patch 8
    ("model.audio.patch_size", (200, 16), "model.audio.patch_size"),  # 98 frames
    ("model.audio.patch_size", (16, 128), "model.audio.patch_size"),  # 64 mel bins
    ("model.audio.num_samples", 2000, "model.audio.patch_size"),  # 11 frames < 16
    ("model.audio.max_frequency", 9000.0, "model.audio.max_frequency"),
    ("model.text.pooling", "max", "model.text.pooling"),
    ("model.audio.position_embedding", "rope", "model.audio.position_embedding"),
    ("model.modalities", ("text", "smell"), "model.modalities"),
    ("model.modalities", (), "model.modalities"),
    ("model.dropout_rate", 1.0, "model.dropout_rate"),
    ("model.remat", "everything", "model.remat"),
    ("dtype", "int8", "dtype"),
    ("tokenizer.type", "wordpiece", "tokenizer.type"),
    # Every type but bytes needs its file (model_file is "" in the default config).
    ("tokenizer.type", "sentencepiece", "tokenizer.model_file"),
    ("tokenizer.type", "clip_bpe", "tokenizer.model_file"),
    ("tokenizer.type", "siglip", "tokenizer.model_file"),
    ("tokenizer.type", "tokenizer_json", "tokenizer.model_file"),
    ("train.batch_size", 0, "train.batch_size"),
    ("train.learning_rate", -1.0, "train.learning_rate"),
    ("mesh.data", 0, "mesh.data"),
    # Optimizer fields: ranges and finiteness (inf > 0, and NaN compares false).
    ("train.learning_rate", float("inf"), "train.learning_rate"),
    ("train.learning_rate", float("nan"), "train.learning_rate"),
    ("train.grad_clip", -1.0, "train.grad_clip"),
    ("train.grad_clip", float("inf"), "train.grad_clip"),
    ("train.b1", -0.1, "train.b1"),
    ("train.b1", 1.0, "train.b1"),
    ("train.b2", 1.5, "train.b2"),
    ("train.weight_decay", -0.01, "train.weight_decay"),
    ("train.weight_decay", float("nan"), "train.weight_decay"),
    ("train.end_learning_rate_factor", 1.5, "train.end_learning_rate_factor"),
    ("train.end_learning_rate_factor", -0.1, "train.end_learning_rate_factor"),
    ("train.warmup_steps", -1, "train.warmup_steps"),
    ("train.seed", -1, "train.seed"),
    ("train.accumulation_unroll", -2, "train.accumulation_unroll"),
    ("model.temperature_init", float("inf"), "model.temperature_init"),
    ("model.logit_bias_init", float("nan"), "model.logit_bias_init"),
    ("model.modality_dropout", -0.5, "model.modality_dropout"),
    ("loss.contrastive_weight", -1.0, "loss.contrastive_weight"),
    ("loss.attribute_weight", float("inf"), "loss.attribute_weight"),
    ("eval.batch_size", 0, "eval.batch_size"),
    ("data.seed", -1, "data.seed"),
    ("data.train_size", 0, "data.train_size"),
    ("data.eval_size", 0, "data.eval_size"),
    ("data.prefetch", -1, "data.prefetch"),
    ("data.num_threads", 0, "data.num_threads"),
    ("attention.linear.seed", -1, "attention.linear.seed"),
    ("mesh.fsdp", -2, "mesh.fsdp"),
    ("param_dtype", "auto", "param_dtype"),
    # Text.
    ("model.text.vocab_size", -1, "model.text.vocab_size"),
    # Image.
    ("model.image.channels", 0, "model.image.channels"),
    ("model.image.image_size", 0, "model.image.image_size"),
    ("model.image.patch_size", 0, "model.image.patch_size"),
    ("model.image.patch_size", -8, "model.image.patch_size"),
    ("model.image.mean", (0.5, 0.5), "model.image.mean"),  # 3 channels
    ("model.image.std", (0.5, 0.5, 0.5, 0.5), "model.image.std"),
    ("model.image.std", (0.5, 0.0, 0.5), "model.image.std"),
    ("model.image.mean", (0.5, float("nan"), 0.5), "model.image.mean"),
    # Audio.
    ("model.audio.sample_rate", 0, "model.audio.sample_rate"),
    ("model.audio.num_samples", 399, "model.audio.num_samples"),  # window_length 400
    ("model.audio.window_length", 0, "model.audio.window_length"),
    ("model.audio.hop_length", 0, "model.audio.hop_length"),
    ("model.audio.num_mel_bins", 0, "model.audio.num_mel_bins"),
    ("model.audio.min_frequency", -1.0, "model.audio.min_frequency"),
    ("model.audio.min_frequency", 8000.0, "model.audio.min_frequency"),  # == max_frequency
    ("model.audio.log_mel_std", 0.0, "model.audio.log_mel_std"),
    ("model.audio.log_mel_mean", float("inf"), "model.audio.log_mel_mean"),
    ("model.audio.patch_size", (0, 16), "model.audio.patch_size"),
    ("model.audio.patch_size", (16, 16, 16), "model.audio.patch_size"),
    # Open groups: user-named entries, checked loosely.
    ("model.attribute_classes", {"shape": 0}, "model.attribute_classes.shape"),
]


@pytest.mark.parametrize(
    "field,value,named", BAD_VALUES, ids=[f"{f}={v}" for f, v, _ in BAD_VALUES]
)
def test_validate_rejects_bad_value_naming_field(field, value, named):
    config = tiny()
    config_lib.validate(config)  # fine before the change
    set_dotted(config, field, value)
    with pytest.raises(ValueError, match=re.escape(f"config.{named}:")):
        config_lib.validate(config)


def test_range_errors_name_the_allowed_range():
    config = tiny()
    config.train.b2 = 1.5
    with pytest.raises(ValueError, match=re.escape("config.train.b2: must be in [0, 1); got 1.5")):
        config_lib.validate(config)
    config = tiny()
    config.model.image.mean = (0.5, 0.5)
    with pytest.raises(
        ValueError, match=re.escape("one entry per channel (model.image.channels=3)")
    ):
        config_lib.validate(config)


def test_every_declared_range_is_checked_with_its_text():
    # RANGES is read off the fields' declarations (SCHEMA); -2 lies outside each of them.
    assert str(config_lib.RANGES["train.steps"]) == "> 0"
    assert str(config_lib.RANGES["mesh.data"]) == "-1 or > 0"
    assert str(config_lib.RANGES["fusion.depth"]) == ">= 0"  # the towers' sizes, declared once
    for path, spec in config_lib.RANGES.items():
        config = tiny()
        *groups, name = path.split(".")
        group = config
        for part in groups:
            group = group[part]
        default = group[name]
        if isinstance(default, tuple):
            bad = tuple(type(v)(-2) for v in default)
        else:
            bad = type(default)(-2)
        group[name] = bad
        bound = f"in {spec}" if isinstance(spec, Interval) else str(spec)
        message = (
            f"every entry must be {bound}; got {bad}"
            if isinstance(bad, tuple)
            else f"must be {bound}; got {bad!r}"
        )
        with pytest.raises(ValueError, match=re.escape(f"config.{path}: {message}")):
            config_lib.validate(config)


def test_every_declared_field_has_a_doc():
    def fields(declared, prefix=""):
        for field in declared:
            if isinstance(field, Group):
                yield from fields(field.members(), f"{prefix}{field.name}.")
            yield f"{prefix}{field.name}", field.doc

    undocumented = [path for path, doc in fields(config_lib.SCHEMA) if not doc.strip()]
    assert not undocumented


TYPE_ERRORS = [
    # (JSON overrides, field the error must name, the type it must ask for)
    ({"model": {"embed_dim": True}}, "model.embed_dim", "an int"),  # a bool is not an int
    ({"model": {"embed_dim": 3.5}}, "model.embed_dim", "an int"),
    ({"model": {"text": {"depth": "2"}}}, "model.text.depth", "an int"),
    ({"train": {"learning_rate": "1e-3"}}, "train.learning_rate", "a number"),
    ({"train": {"b1": False}}, "train.b1", "a number"),
    ({"model": {"scan_layers": 1}}, "model.scan_layers", "a bool"),
    ({"model": {"text": {"pooling": None}}}, "model.text.pooling", "a str"),
    ({"model": {"audio": {"patch_size": [16, "8"]}}}, "model.audio.patch_size", "a list of ints"),
    ({"model": {"audio": {"patch_size": [16.0, 16]}}}, "model.audio.patch_size", "a list of ints"),
    ({"model": {"audio": {"patch_size": 16}}}, "model.audio.patch_size", "a list of ints"),
    ({"model": {"image": {"mean": ["a", "b", "c"]}}}, "model.image.mean", "a list of numbers"),
    ({"model": {"modalities": ["text", 3]}}, "model.modalities", "a list of strs"),
    ({"model": {"attribute_classes": {"shape": 2.5}}}, "model.attribute_classes.shape", "an int"),
    (
        {"model": {"attribute_modalities": {"text": "shape"}}},
        "model.attribute_modalities.text",
        "a list of strs",
    ),
]


@pytest.mark.parametrize(
    "overrides,named,wanted", TYPE_ERRORS, ids=[named for _, named, _ in TYPE_ERRORS]
)
def test_json_values_of_the_wrong_type_are_rejected(tmp_path, overrides, named, wanted):
    path = tmp_path / "model.json"
    path.write_text(json.dumps(overrides))
    with pytest.raises(TypeError, match=re.escape(f"config.{named}: must be {wanted}")):
        config_lib.load_config(str(path))


def test_validate_checks_types_set_in_python():
    """ConfigDict takes a bool for an int field and None for any: validate catches both."""
    config = tiny()
    config.model.embed_dim = True
    with pytest.raises(TypeError, match=re.escape("config.model.embed_dim: must be an int")):
        config_lib.validate(config)
    config = tiny()
    config.train.learning_rate = None
    with pytest.raises(TypeError, match=re.escape("config.train.learning_rate: must be a number")):
        config_lib.validate(config)


def test_ints_stand_for_floats(tmp_path):
    path = tmp_path / "model.json"
    path.write_text(json.dumps({"train": {"learning_rate": 1, "grad_clip": 0}}))
    config = config_lib.load_config(str(path))
    assert config.train.learning_rate == 1.0 and config.train.grad_clip == 0.0
    config = tiny()
    config.model.image.mean = (0, 1, 0)  # int entries of a float tuple
    config_lib.validate(config)


def test_validate_rejects_keys_the_schema_lacks():
    config = tiny()
    config.model.text.widht = 64  # a ConfigDict takes new keys; the schema has none
    with pytest.raises(ValueError, match=re.escape("config.model.text.widht: unknown key")):
        config_lib.validate(config)
    config = tiny()
    config.data.features.smell = "clip"
    with pytest.raises(ValueError, match=re.escape("config.data.features.smell: unknown key")):
        config_lib.validate(config)


SHIPPED_CONFIGS = [
    *(
        f"{path.name}{arg}"
        for path in sorted((REPO / "configs").glob("*.py"))
        for arg in ("", *(f":{name}" for name in config_lib.VARIANTS))
    ),
    *(path.name for path in sorted((REPO / "configs").glob("*.json"))),
]


@pytest.mark.parametrize("name", SHIPPED_CONFIGS)
def test_every_shipped_config_validates(name):
    config_lib.load_config(f"{REPO / 'configs'}/{name}")


def test_text_vocab_size_must_hold_the_tokenizers_ids():
    config = tiny()
    config.model.text.vocab_size = 100
    config_lib.validate(config)  # the config alone does not know the tokenizer
    with pytest.raises(ValueError, match=r"config\.model\.text\.vocab_size: 100 .*\(259 ids\)"):
        MultiModalTransformer.from_config(config, vocab_size=259)
    config.model.text.vocab_size = 300  # a larger table is fine
    module = MultiModalTransformer.from_config(config, vocab_size=259)
    assert module.encoders["text"]["vocab_size"] == 300
    config.model.text.vocab_size = 0  # 0 takes the tokenizer's
    module = MultiModalTransformer.from_config(config, vocab_size=259)
    assert module.encoders["text"]["vocab_size"] == 259
    config.model.text.vocab_size = 100
    config.model.modalities = ("image",)  # no text tower: no table to check
    MultiModalTransformer.from_config(config, vocab_size=259)


def test_validate_ignores_towers_of_absent_modalities():
    config = tiny()
    config.model.modalities = ("text",)
    config.model.image.image_size = 60  # would be invalid if the model had an image encoder
    config.model.audio.patch_size = (500, 500)
    config_lib.validate(config)


@pytest.mark.parametrize(
    "field,value",
    [
        ("attention.local.radius", -1),
        ("attention.local.num_global", -2),
        ("attention.linear.feature_map", "relu"),
        ("attention.linear.num_features", -4),
    ],
)
def test_attention_options_are_validated(field, value):
    config = config_lib.default_config()
    group, kernel, name = field.split(".")
    config[group][kernel][name] = value
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        config_lib.validate(config)


@pytest.mark.parametrize("kernel", ["local", "linear"])
def test_every_tower_and_the_fusion_take_their_kernel_from_config(kernel):
    config = config_lib.apply_variant(config_lib.default_config(), "tiny")
    config.model.audio.attention = kernel
    config.fusion.attention = kernel
    module = mmtx.MultiModalTransformer.from_config(config_lib.validate(config), vocab_size=259)
    assert module.encoders["audio"]["attention"] == kernel
    assert dict(module.encoders["audio"]["attention_options"]) == config.attention[kernel].to_dict()
    assert module.encoders["text"]["attention"] == "dense"
    assert dict(module.fusion["attention_options"]) == config.attention[kernel].to_dict()


@pytest.mark.parametrize(
    "fusion_type,depth,fusion_layer,named",
    [
        ("bottleneck", 2, 2, "fusion.fusion_layer"),
        ("bottleneck", 2, -1, "fusion.fusion_layer"),
        ("perceiver", 0, 0, "fusion.depth"),
        ("cross_attention", 0, 0, "fusion.depth"),
    ],
)
def test_validate_checks_the_chosen_fusion(fusion_type, depth, fusion_layer, named):
    config = tiny()
    config.fusion.type = fusion_type
    config.fusion.depth, config.fusion.fusion_layer = depth, fusion_layer
    with pytest.raises(ValueError, match=re.escape(f"config.{named}:")):
        config_lib.validate(config)
    config.fusion.type = "gated"  # gated has no layers: depth and fusion_layer do not apply
    config_lib.validate(config)


def test_merge_accepts_user_named_entries_in_open_groups():
    config = config_lib.merge_overrides(
        tiny(),
        {
            "model": {
                "attribute_classes": {"colour": 6},
                "attribute_modalities": {"text": ["colour"]},
            }
        },
    )
    assert config.model.attribute_classes.colour == 6
    assert config.model.attribute_modalities.text == ("colour",)
    config_lib.validate(config)
    with pytest.raises(KeyError, match=r"model\.colour"):
        config_lib.merge_overrides(tiny(), {"model": {"colour": 6}})


def test_tower_tokens_match_the_model():
    """tower_tokens equals the token count each tower's transformer gets (CLS included)."""
    config = config_lib.load_config("configs/base.py:tiny")
    module = MultiModalTransformer.from_config(config, vocab_size=259)
    batch = dummy_batch(config, 2)

    def towers(rng):
        _, state = module.init_with_output(
            rng,
            batch,
            train=False,
            capture_intermediates=lambda mdl, _: mdl.name == "tower",
        )
        return state["intermediates"]

    captured = jax.eval_shape(towers, jax.random.PRNGKey(0))
    for modality in config.model.modalities:
        tokens, _ = captured[modality]["tower"]["__call__"][0]
        assert tokens.shape[1] == config_lib.tower_tokens(config, modality), modality


# ------------------------------------------------------------------ architecture options

ARCHITECTURE_BAD_VALUES = [
    # (dotted field to set, bad value, field the error must name, words of the message)
    ("model.text.activation", "relu", "model.text.activation", "'gelu_tanh', 'gelu'"),
    ("model.audio.activation", "swish", "model.audio.activation", "quick_gelu"),
    ("model.image.norm_eps", 0.0, "model.image.norm_eps", "> 0"),
    ("model.text.norm_eps", -1e-5, "model.text.norm_eps", "> 0"),
    ("model.text.projection", "linear", "model.text.projection", "'dense', 'no_bias', 'none'"),
    ("model.text.pooling", "map", "model.text.pooling", "'eot', 'last'"),
    ("model.image.pooling", "eot", "model.image.pooling", "'map'"),
    ("model.image.pooling", "cls_distill", "model.image.pooling", "'map'"),
    ("model.audio.pooling", "last", "model.audio.pooling", "'cls_distill'"),
    ("model.audio.patch_stride", (-1, 10), "model.audio.patch_stride", ">= 0"),
    ("model.audio.patch_stride", (10,), "model.audio.patch_stride", "2 entries"),
    ("model.audio.patch_stride", (20, 8), "model.audio.patch_stride", "skips"),
    ("model.image.class_token_posemb", True, "model.image.class_token_posemb", "learned"),
    ("model.audio.class_token_posemb", True, "model.audio.class_token_posemb", "learned"),
]


@pytest.mark.parametrize(
    "field,value,named,words",
    ARCHITECTURE_BAD_VALUES,
    ids=[f"{f}={v}" for f, v, _, _ in ARCHITECTURE_BAD_VALUES],
)
def test_validate_rejects_bad_architecture_options(field, value, named, words):
    config = tiny()
    if field == "model.image.class_token_posemb":
        config.model.image.position_embedding = "sincos"
    config_lib.validate(config)  # fine before the change
    set_dotted(config, field, value)
    with pytest.raises(ValueError, match=re.escape(f"config.{named}:")) as info:
        config_lib.validate(config)
    assert words in str(info.value)


def test_projection_none_with_the_embedding_width_validates():
    config = tiny()
    config.model.text.projection = "none"  # width 32 == embed_dim 32
    config_lib.validate(config)
    config.model.text.width = 64
    with pytest.raises(ValueError, match=r"config\.model\.text\.projection: .*width \(64\)"):
        config_lib.validate(config)
    config.model.modalities = ("image", "audio")  # an absent tower is not checked
    config_lib.validate(config)


def test_fusion_none_needs_no_classifier_and_no_modality_dropout():
    config = tiny()
    config.fusion.type = "none"
    with pytest.raises(ValueError, match=r"config\.model\.num_classes: fusion\.type='none'"):
        config_lib.validate(config)
    config.model.num_classes = 0
    config_lib.validate(config)
    config.model.modality_dropout = 0.1
    with pytest.raises(ValueError, match=r"config\.model\.modality_dropout: .*'none'"):
        config_lib.validate(config)


def test_patch_bias_false_needs_the_patch_stem():
    config = tiny()
    config.model.image.patch_bias = False
    config_lib.validate(config)
    config.model.image.stem = "conv"
    with pytest.raises(ValueError, match=r"config\.model\.image\.patch_bias: .*stem='patch'"):
        config_lib.validate(config)


def test_every_new_option_validates_with_its_allowed_values():
    config = tiny()
    config.fusion.type, config.model.num_classes = "none", 0
    for modality, poolings in config_lib.POOLINGS.items():
        for pooling in poolings:
            config.model[modality].pooling = pooling
            config_lib.validate(config)
    for activation in config_lib.ACTIVATIONS:
        config.model.text.activation = activation
        config_lib.validate(config)
    for projection in config_lib.PROJECTIONS:
        config.model.audio.projection = projection
        config_lib.validate(config)
    config.model.audio.update(patch_stride=(10, 10), patch_bias=False)
    config.model.audio.update(position_embedding="learned", class_token_posemb=True)
    config.model.image.update(class_token_posemb=True, pre_norm=True, final_norm=False)
    config.model.text.update(causal=True, norm_eps=1e-5)
    config_lib.validate(config)


@pytest.mark.parametrize(
    "pooling,patch_stride,tokens",
    [
        ("cls", (0, 0), 6 * 4 + 1),  # 98 frames // 16, 64 mels // 16
        ("mean", (0, 0), 6 * 4),
        ("cls_distill", (0, 0), 6 * 4 + 2),
        ("cls_distill", (10, 10), 9 * 5 + 2),  # (98 - 16) // 10 + 1, (64 - 16) // 10 + 1
        ("mean", (16, 8), 6 * 7),  # stride 0 on an axis means the patch size
        ("mean", (0, 8), 6 * 7),
    ],
)
def test_tower_tokens_count_class_tokens_and_the_strided_grid(pooling, patch_stride, tokens):
    config = tiny()
    config.model.audio.update(pooling=pooling, patch_stride=patch_stride)
    assert config_lib.tower_tokens(config, "audio") == tokens
    config.model.image.pooling = "map"
    assert config_lib.tower_tokens(config, "image") == (64 // 8) ** 2
    config.model.text.pooling = "eot"
    assert config_lib.tower_tokens(config, "text") == config.model.text.max_length


def test_tower_tokens_match_the_model_with_the_new_options():
    """As test_tower_tokens_match_the_model, with cls_distill, overlapping patches, map and
    eot pooling."""
    config = config_lib.load_config("configs/base.py:tiny")
    config.model.audio.update(pooling="cls_distill", patch_stride=(10, 6))
    config.model.image.pooling = "map"
    config.model.text.pooling = "eot"
    config = config_lib.validate(config)
    module = MultiModalTransformer.from_config(config, vocab_size=259)

    def towers(rng):
        _, state = module.init_with_output(
            rng,
            dummy_batch(config, 2),
            capture_intermediates=lambda mdl, _: mdl.name == "tower",
        )
        return state["intermediates"]

    captured = jax.eval_shape(towers, jax.random.PRNGKey(0))
    for modality in config.model.modalities:
        tokens, _ = captured[modality]["tower"]["__call__"][0]
        assert tokens.shape[1] == config_lib.tower_tokens(config, modality), modality


def test_attention_implementation_defaults_to_auto_and_takes_xla():
    assert config_lib.default_config().attention.implementation == "auto"
    config = tiny()
    config.attention.implementation = "xla"
    config_lib.validate(config)


def test_unknown_attention_implementation_is_rejected():
    config = tiny()
    config.attention.implementation = "flash"
    with pytest.raises(ValueError, match=r"config\.attention\.implementation: 'flash' is not one"):
        config_lib.validate(config)


def test_what_only_the_code_can_answer_is_not_validated_here():
    """The config is data: a fusion this process has not registered and an implementation
    this host cannot run pass validation; building the model refuses them
    (tests/test_model_checks.py)."""
    config = tiny()
    config.fusion.type = "my_fusion"
    config.attention.implementation = "pallas"
    config_lib.validate(config)
