"""The package's imports point one way: down the layers of LAYERS, with no cycles (issue 30).

Every ``import`` and ``from ... import`` in every module of ``mmtx/`` counts, at module level
and inside functions (lazy imports) alike: the modules are parsed with ``ast``, none is
imported. Each module belongs to the unit of LAYERS that is the longest prefix of its name; a
module may import from its own layer and the layers below it, never from one above, and the
units may form no cycle. ALLOWED_UPWARD lists the wrong-way imports allowed (none), each with
its reason; any other one fails here, named by file, line and import. docs/design.md shows
LAYERS as ``render_layers()`` writes it (test_design_md_shows_the_layers).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mmtx"

# The layers, bottom first: (what the layer is, its units). A unit is a module or a package
# (with everything under it unless a longer unit names a part of it).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "standard library only",
        ("mmtx.output_paths", "mmtx.launch", "mmtx.data.image_options", "mmtx.data.source_kinds"),
    ),
    ("kernels (no Flax); config schemas (no JAX)", ("mmtx.attention", "mmtx.schemas")),
    ("the config: data (no JAX)", ("mmtx.config",)),
    ("Flax building blocks", ("mmtx.nn",)),
    ("encoders; tokenizers, preprocessing, sources", ("mmtx.encoders", "mmtx.data")),
    ("the modality registry's JAX side", ("mmtx.modalities",)),
    (
        "what the registry drives",
        (
            "mmtx.fusion",
            "mmtx.batch_checks",
            "mmtx.losses",
            "mmtx.data.tfds_source",
            "mmtx.data.pipeline",
        ),
    ),
    (
        "the model (checked against the code it runs); metrics",
        ("mmtx.model_checks", "mmtx.models", "mmtx.evaluate"),
    ),
    ("training", ("mmtx.train",)),
    ("the user-facing Model", ("mmtx.inference",)),
    ("published checkpoints", ("mmtx.checkpoints",)),
    (
        "commands; the package's own names",
        (
            "mmtx.main",
            "mmtx.compile",
            "mmtx.embed",
            "mmtx.evaluate.command",
            "mmtx.evaluate.__main__",
            "mmtx.import_checkpoint",
            "mmtx",
        ),
    ),
)

# Wrong-way imports allowed: (importing file, imported module) -> why it stays for now. None
# since issue 30 removed the last two; an entry is a debt, and a stale one fails
# test_allowed_upward_imports_still_exist.
ALLOWED_UPWARD: dict[tuple[str, str], str] = {}


@dataclasses.dataclass(frozen=True)
class Import:
    file: str  # relative to the repository root
    line: int
    source: str  # the importing module
    target: str  # the imported module (the package itself for a name it defines)
    lazy: bool  # not a statement of the module body (in a function, class, if or try)


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@functools.cache
def _modules() -> dict[str, pathlib.Path]:
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


@functools.cache
def imports() -> tuple[Import, ...]:
    """Every import of an mmtx module in mmtx/, lazy ones included."""
    modules = _modules()
    found = []
    for source, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        top = {id(node) for node in tree.body}
        package = source if path.name == "__init__.py" else source.rpartition(".")[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*parts, *([node.module] if node.module else [])])
                # `from pkg import name`: the submodule when there is one, else pkg itself.
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            else:
                continue
            for target in targets:
                if target == "mmtx" or target.startswith("mmtx."):
                    file = path.relative_to(ROOT).as_posix()
                    found.append(Import(file, node.lineno, source, target, id(node) not in top))
    return tuple(found)


def unit_of(module: str) -> str | None:
    """The unit of LAYERS a module belongs to: the longest that is it or a package above it.
    The bare ``mmtx`` unit holds only the package's own ``__init__``."""
    best = None
    for _, units in LAYERS:
        for unit in units:
            if module == unit or (unit != "mmtx" and module.startswith(unit + ".")):
                if best is None or len(unit) > len(best):
                    best = unit
    return best


def layer_of(unit: str) -> int:
    return next(i for i, (_, units) in enumerate(LAYERS) if unit in units)


def render_layers() -> str:
    """LAYERS as docs/design.md shows them: top first, one line per layer."""
    lines = []
    for i, (what, units) in reversed(list(enumerate(LAYERS, start=1))):
        lines.append(f"{i:2d}  {what}")
        row: list[str] = []
        for unit in units:
            if row and len("  ".join([*row, unit])) > 84:
                lines.append("      " + "  ".join(row))
                row = []
            row.append(unit)
        lines.append("      " + "  ".join(row))
    return "\n".join(lines)


def _describe(imp: Import) -> str:
    lazy = " (lazy)" if imp.lazy else ""
    source_unit, target_unit = unit_of(imp.source), unit_of(imp.target)
    return (
        f"{imp.file}:{imp.line}: {imp.source} imports {imp.target}{lazy}: "
        f"layer {layer_of(source_unit) + 1} ({source_unit}) -> "
        f"layer {layer_of(target_unit) + 1} ({target_unit})"
    )


def _upward(imp: Import) -> bool:
    return layer_of(unit_of(imp.target)) > layer_of(unit_of(imp.source))


def test_every_module_has_a_layer():
    missing = [module for module in _modules() if unit_of(module) is None]
    assert not missing, (
        f"modules in no unit of LAYERS (add them to tests/test_layers.py): {missing}"
    )
    units = [unit for _, layer in LAYERS for unit in layer]
    assert len(units) == len(set(units)), "a unit is in LAYERS twice"
    unknown = [unit for unit in units if unit not in _modules()]
    assert not unknown, f"units of LAYERS that are no module or package: {unknown}"


def test_imports_point_down_the_layers():
    wrong = [
        _describe(imp)
        for imp in imports()
        if _upward(imp) and (imp.file, imp.target) not in ALLOWED_UPWARD
    ]
    assert not wrong, (
        "imports from a higher layer (LAYERS in tests/test_layers.py; docs/design.md):\n"
        + "\n".join(wrong)
    )


def test_allowed_upward_imports_still_exist():
    upward = {(imp.file, imp.target) for imp in imports() if _upward(imp)}
    stale = [key for key in ALLOWED_UPWARD if key not in upward]
    assert not stale, f"ALLOWED_UPWARD entries no longer needed (remove them): {stale}"


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one unit (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(edges.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_units_form_no_cycle():
    edges: dict[str, set[str]] = {}
    via: dict[tuple[str, str], Import] = {}
    for imp in imports():
        if (imp.file, imp.target) in ALLOWED_UPWARD:
            continue
        source, target = unit_of(imp.source), unit_of(imp.target)
        if source != target:
            edges.setdefault(source, set()).add(target)
            via.setdefault((source, target), imp)
    cycles = _cycles(edges)
    report = []
    for component in cycles:
        cycle = _shortest_cycle(edges, component)
        report.append(" -> ".join([*cycle, cycle[0]]))
        for source, target in zip(cycle, [*cycle[1:], cycle[0]], strict=True):
            report.append(f"    {_describe(via[source, target])}")
    assert not cycles, "units that import each other (one cycle each):\n" + "\n".join(report)


def _shortest_cycle(edges: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest cycle among ``component``'s units, as the units along it."""
    best: list[str] = []
    for start in component:
        paths = {start: [start]}
        queue = [start]
        while queue:
            node = queue.pop(0)
            for succ in sorted(edges.get(node, set()) & set(component)):
                if succ == start and (not best or len(paths[node]) < len(best)):
                    best = paths[node]
                elif succ not in paths:
                    paths[succ] = [*paths[node], succ]
                    queue.append(succ)
    return best


def test_design_md_shows_the_layers():
    design = (ROOT / "docs" / "design.md").read_text()
    assert render_layers() in design, (
        "docs/design.md's layer table differs from LAYERS; paste in tests/test_layers.py's "
        f"render_layers():\n{render_layers()}"
    )
