"""The shape of the code: imports point one way (commands -> training/serve/tracking ->
models/data -> config/errors) with no cycles, and each default has one owner."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dlx"

# lower layers never import higher ones; a module's layer is that of its longest listed prefix
LAYERS = [
    ("dlx", "dlx.errors", "dlx.ranges", "dlx.config", "dlx.startup", "dlx.storage"),
    ("dlx.family", "dlx.families", "dlx.data", "dlx.models", "dlx.plots"),
    ("dlx.training", "dlx.tracking", "dlx.rundir", "dlx.mlflow_model", "dlx.serve", "dlx.sweeps"),
    ("dlx.commands", "dlx.cli", "dlx.schemas", "dlx.__main__"),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer(module: str) -> int:
    best = max((p for group in LAYERS for p in group if module == p or module.startswith(p + ".")), key=len)
    return next(i for i, group in enumerate(LAYERS) if best in group)


def imports(module: str) -> set[str]:
    """The dlx modules `module` imports anywhere (lazy imports in functions included)."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module for a in node.names]
        else:
            continue
        found |= {n for n in names if n in MODULES}
    return found - {module}


GRAPH = {m: imports(m) for m in MODULES}


def test_the_layers_cover_every_module():
    for module in MODULES:
        layer(module)  # raises on a module no layer names


def test_no_module_imports_from_a_higher_layer():
    upward = [f"{m} ({layer(m)}) imports {t} ({layer(t)})" for m, targets in GRAPH.items() for t in targets if layer(t) > layer(m)]
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            # a package's __init__ importing its own submodules is not a cycle between modules
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_import_walk_sees_lazy_imports():
    """The check could pass by seeing nothing: function-level imports must count."""
    assert "dlx.training.loop" in GRAPH["dlx.commands.train"]  # imported inside train()
    assert "dlx.family" in GRAPH["dlx.families.mlp"]  # at the top


# --------------------------------------------------------------------------- one owner per default
def _leaves(tree: dict, prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _group_yamls():
    from dlx.schemas import conf_dir

    for path in sorted(conf_dir().glob("*/*.yaml")):
        yield pytest.param(path, id=str(path.relative_to(conf_dir())))


@pytest.mark.parametrize("path", _group_yamls())
def test_each_default_has_one_owner(path):
    """The schema owns every default. A group's own YAML (model/mlp.yaml on the mlp schema,
    trainer/default.yaml) repeats none of its keys; a preset (model/ae.yaml on the autoencoder
    schema, optimizer/sgd.yaml on the optimizer schema) sets only keys whose value differs."""
    from omegaconf import OmegaConf

    from dlx import config, family

    raw = OmegaConf.to_container(OmegaConf.load(path))
    ref = next((d for d in raw.get("defaults", []) if isinstance(d, str) and d.startswith("/schema/")), None)
    if ref is None:
        pytest.skip("no schema (a Hydra plugin's own config)")
    group, name = ref[len("/schema/"):].split("@")[0].split("/")
    node = family.builtin()[name] if group == "model" else config.SCHEMAS[group]
    defaults = dict(_leaves(OmegaConf.to_container(OmegaConf.structured(node), enum_to_str=True)))
    own = path.stem == name or group == "trainer"
    for key, value in _leaves({k: v for k, v in raw.items() if k not in ("defaults", "_target_")}):
        if key not in defaults:
            continue
        assert not own, f"{path.name}: {key} is the schema's default to own ({node.__name__}); set it there only"
        assert value != defaults[key], f"{path.name}: {key}={value!r} repeats the schema's default; drop it from the YAML"


# --------------------------------------------------------------------------- every number has a range
def _numeric_fields():
    """(schema, dotted key, field) of every int/float field of every schema, nested ones too."""
    import dataclasses
    import typing

    from dlx import config, family

    roots = [(s, f"{c}:") for c, s in config.COMMANDS.items()] + [(s, f"{g}.") for g, s in config.SCHEMAS.items()]
    roots += [(fam, "model.") for fam in family.builtin().values()]
    seen, out = set(), []
    while roots:
        schema, prefix = roots.pop()
        hints = typing.get_type_hints(schema)
        for f in dataclasses.fields(schema):
            hint = hints[f.name]
            args = [hint, *typing.get_args(hint)]
            if any(dataclasses.is_dataclass(a) for a in args):
                nested = next(a for a in args if dataclasses.is_dataclass(a))
                roots.append((nested, f"{prefix}{f.name}."))
            elif any(a in (int, float) for a in args) and (schema, f.name) not in seen:
                seen.add((schema, f.name))
                out.append(pytest.param(schema, f"{prefix}{f.name}", f, id=f"{schema.__name__}.{f.name}"))
    return out


@pytest.mark.parametrize("schema, key, f", _numeric_fields())
def test_every_numeric_key_declares_a_range_that_is_checked(schema, key, f):
    from dlx.ranges import check_ranges
    from dlx.errors import DlxError

    rng = f.metadata.get("range")
    assert rng is not None, f"{key}: a numeric key without a declared range (dlx.ranges.ranged)"
    low, high, open_low, open_high = rng.bounds()
    outside = low if open_low else (low - 1 if low > -1e15 else None)
    if outside is None:
        outside = high if open_high else high * 2 + 1
    with pytest.raises(DlxError, match=rf"^{f.name}: .* is outside the allowed range "):
        check_ranges(schema, {f.name: outside})
    default = f.default_factory() if callable(f.default_factory) else f.default
    if isinstance(default, (int, float, list)) and not isinstance(default, bool):
        check_ranges(schema, {f.name: default})  # the default itself is allowed
    if isinstance(default, list):  # a list's elements are checked one by one
        with pytest.raises(DlxError, match=rf"^{f.name}\[0\]: .* is outside the allowed range "):
            check_ranges(schema, {f.name: [outside]})
