"""Import layering: light top-level package, core without napari/Qt, never torchvision."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path


def _run(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_top_level_import_is_light():
    out = _run(
        """
        import sys, napari_sansa
        print(sorted(m for m in ("torch", "napari", "qtpy", "sam2") if m in sys.modules))
        """
    )
    assert out == "[]"


def test_core_runs_without_napari_qt_or_torchvision(weights):
    sam2, adapters = weights
    out = _run(
        f"""
        import sys
        import numpy as np
        import napari_sansa as ns
        m = ns.load_model(config="sam2_hiera_t", sam2_checkpoint={str(sam2)!r},
                          adapter_checkpoint={str(adapters)!r}, device="cpu", image_size=256)
        img = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
        mask = np.zeros((64, 64), bool); mask[10:30, 10:30] = True
        m.segment([ns.Reference(img, [ns.Mask(mask)])], [img])
        print(sorted(x for x in ("napari", "qtpy", "PyQt5", "PyQt6", "PySide6", "magicgui",
                                 "torchvision") if x in sys.modules))
        """
    )
    assert out == "[]"


# -- the package's import graph, imports inside functions included ---------------------------

_SRC = Path(__file__).resolve().parents[1] / "src"
_QT = ("napari.qt", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "superqt")


def _modules() -> dict[str, tuple[Path, bool]]:
    found = {}
    for path in sorted((_SRC / "napari_sansa").rglob("*.py")):
        name = ".".join(path.relative_to(_SRC).with_suffix("").parts)
        is_package = name.endswith(".__init__")
        found[name.removesuffix(".__init__")] = (path, is_package)
    return found


def _imports(modules):
    """``{module: {package module it imports}}``, the external names it imports
    (``(module, name)``) and the private names it takes from other package modules."""
    edges = {m: set() for m in modules}
    external, private = [], []
    for m, (path, is_package) in modules.items():
        package = m if is_package else m.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    external.append((m, alias.name))
                    name = alias.name
                    while name not in modules and "." in name:
                        name = name.rpartition(".")[0]
                    if name in modules and name != m:
                        edges[m].add(name)
            elif isinstance(node, ast.ImportFrom):
                source = node.module or ""
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join([*base, *([node.module] if node.module else [])])
                external.append((m, source))
                if not source.startswith("napari_sansa"):
                    continue
                for alias in node.names:
                    sub = f"{source}.{alias.name}"
                    if sub in modules:
                        if sub != m:
                            edges[m].add(sub)
                        continue
                    if source in modules and source != m:
                        edges[m].add(source)
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        private.append(f"{m}: {source}.{alias.name}")
    return edges, external, private


def _cycles(edges) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_between_the_package_modules():
    edges, _, _ = _imports(_modules())
    assert _cycles(edges) == []


def test_layers_import_downwards_and_qt_only_under_qt():
    modules = _modules()
    edges, external, _ = _imports(modules)

    def layer(m):
        parts = m.split(".")
        if parts[1:3] == ["napari", "_qt"]:
            return 3
        return {"core": 0, "dataset": 1, "napari": 2}.get(parts[1] if len(parts) > 1 else "")

    upward = [
        f"{a} -> {b}"
        for a in edges
        for b in edges[a]
        if None not in (layer(a), layer(b)) and layer(b) > layer(a)
    ]
    assert upward == []
    qt = sorted(
        f"{m} imports {name}"
        for m, name in external
        if name.startswith(_QT) and not m.startswith("napari_sansa.napari._qt")
    )
    assert qt == []


def test_few_private_names_are_imported_across_modules():
    """A name used by another module is public within the package (no underscore)."""
    _, _, private = _imports(_modules())
    assert private == []


def test_only_the_engine_and_the_weights_code_reach_the_network():
    """The SAM2 network (``.sam``) is held by ``core.engine.Engine``; only the engine, the
    weights code in ``core/models/`` and the model's read-only ``sam`` property reach it."""
    reached = []
    for m, (path, _) in _modules().items():
        if m == "napari_sansa.core.engine" or m.startswith("napari_sansa.core.models."):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        allowed = set()
        if m == "napari_sansa.core.model":  # the public, read-only SansaModel.sam
            for node in ast.walk(tree):
                if isinstance(node, ast.FunctionDef) and node.name == "sam":
                    allowed |= {id(n) for n in ast.walk(node)}
        reached += [
            f"{m}:{node.lineno}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr == "sam" and id(node) not in allowed
        ]
    assert reached == []
