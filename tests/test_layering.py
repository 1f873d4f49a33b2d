"""Dependencies point downward only (DESIGN.md section 1): no module imports a module of a higher layer.

Every import counts, function-local ones included (an import inside a function that only hides a cycle is
still a dependency), and so does `importlib.import_module("argen....")` with a literal name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "argen"

# Top to bottom; a module belongs to the entry that is the longest prefix of its name. Files, datasets and
# ranks sit above the models (models never touch them), the model file format and registry below them.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("argen.cli", "argen.__main__"),
    ("argen.apps",),
    ("argen.training", "argen.sampling", "argen.eval"),
    ("argen.data", "argen.token_store", "argen.distributed", "argen.device"),
    ("argen.models",),
    ("argen.tokenizers", "argen.nn", "argen.orders"),
    ("argen.model_io", "argen.io", "argen.config", "argen"),
)
# DESIGN draws training, sampling and eval side by side: none should need another. The edges that remain
# are listed (with where the fix goes), so a new one fails and a fixed one must be removed from the list.
PEERS = ("argen.training", "argen.sampling", "argen.eval")
PENDING_PEER_EDGES: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every argen module that `source` (the code of `module`) imports, at any depth of the syntax tree."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = module.split(".")[: len(module.split(".")) - node.level + is_package]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:  # `from argen.eval import fid` imports the module argen.eval.fid
                name = f"{base}.{alias.name}"
                found.add(name if name in MODULES else base)
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.add(node.args[0].value)
    return {m for m in found if m in MODULES}


def layer_of(module: str) -> int:
    best = max((p for layer in LAYERS for p in layer if module == p or module.startswith(p + ".")), key=len)
    return next(i for i, layer in enumerate(LAYERS) if best in layer)


def package_of(module: str) -> str:
    return max((p for layer in LAYERS for p in layer if module == p or module.startswith(p + ".")), key=len)


def edges() -> set[tuple[str, str]]:
    out = set()
    for mod, path in MODULES.items():
        for target in imports(path.read_text(), mod, path.name == "__init__.py"):
            out.add((mod, target))
    return out


EDGES = edges()


def test_every_module_has_a_layer():
    assert all(layer_of(m) >= 0 for m in MODULES)
    assert {"argen.cli", "argen.apps.reconstruct", "argen.model_io", "argen.tokenizers.vqgan"} <= set(MODULES)


def test_no_module_imports_a_higher_layer():
    upward = sorted(
        f"{src} (layer {layer_of(src)}) imports {dst} (layer {layer_of(dst)})"
        for src, dst in EDGES
        if layer_of(dst) < layer_of(src)
    )
    assert not upward, "\n".join(upward)


def test_training_sampling_eval_do_not_import_each_other():
    peer = {
        (src, dst)
        for src, dst in EDGES
        if package_of(src) in PEERS and package_of(dst) in PEERS and package_of(src) != package_of(dst)
    }
    assert peer == PENDING_PEER_EDGES, (
        f"new: {sorted(peer - PENDING_PEER_EDGES)}, fixed (remove them): "
        + str(sorted(PENDING_PEER_EDGES - peer))
    )


@pytest.mark.parametrize(
    ("source", "module", "expected"),
    [
        ("def f():\n    from argen.models import checkpoints\n", "argen.x", {"argen.models.checkpoints"}),
        ("import importlib\nimportlib.import_module('argen.models.gpt')\n", "argen.x", {"argen.models.gpt"}),
        ("from .extend import Extension\n", "argen.sampling.pipeline", {"argen.sampling.extend"}),
        ("from . import fid\n", "argen.eval", {"argen.eval.fid"}),
    ],
)
def test_the_walk_sees_local_relative_and_importlib_imports(source, module, expected):
    assert imports(source, module, is_package=module == "argen.eval") >= expected


def import_cycles() -> list[list[str]]:
    """Strongly connected groups of more than one module in the import graph (TYPE_CHECKING imports count:
    a type that both sides need belongs in a module both import)."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for src, dst in EDGES:
        if src != dst:
            graph[src].add(dst)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for m in sorted(graph):
        if m not in index:
            visit(m)
    return cycles


def test_no_import_cycles():
    assert import_cycles() == []
