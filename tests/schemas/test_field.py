"""Tests for mmtx.schemas.field: a group made from its declarations, and their ranges."""

from mmtx.schemas.field import Field, Group, config_group, declared_ranges
from mmtx.schemas.ranges import Above, AtLeast

DECLARED = (
    Field("steps", 10, "Steps.", range=Above(0)),
    Field("name", "x", "A name."),
    Group("inner", (Field("rank", 0, "Rank.", range=AtLeast(0)),), "A nested group."),
    Group("open", (), "User-named entries."),
    Group("made", lambda: (Field("a", "", "A."), Field("b", "", "B.")), "Made per call."),
)


def test_config_group_holds_the_defaults_with_nested_groups():
    group = config_group(DECLARED)
    assert group.to_dict() == {
        "steps": 10,
        "name": "x",
        "inner": {"rank": 0},
        "open": {},
        "made": {"a": "", "b": ""},
    }
    # Each call makes new groups: changing one config leaves the next one's defaults alone.
    group.inner.rank = 3
    assert config_group(DECLARED).inner.rank == 0


def test_declared_ranges_are_the_dotted_paths_of_the_fields_with_a_range():
    ranges = dict(declared_ranges(DECLARED, "g."))
    assert {path: str(spec) for path, spec in ranges.items()} == {
        "g.steps": "> 0",
        "g.inner.rank": ">= 0",
    }


def test_with_default_keeps_the_range_and_may_replace_the_doc():
    field = DECLARED[0].with_default(5, doc="Other steps.")
    assert (field.default, field.doc, field.range) == (5, "Other steps.", Above(0))
    assert DECLARED[0].with_default(5).doc == "Steps."
