"""fvq/ in rooms (docs/design.md): every import arrow points down a floor, no module imports itself back,
and the library never imports the harness. Read from the source (AST), lazy imports in functions included."""
import ast
from pathlib import Path

FVQ = Path(__file__).resolve().parents[1] / "fvq"

# The floors, ground first: the tokenizer (vq/) and its evaluation (eval/) stand side by side on core/;
# build.py and the Fig. 2 toy assemble them; the tokenizer's training loop and the generator (the paper's
# second stage) use everything below.
FLOORS = {"fvq.core": 0, "fvq.vq": 1, "fvq.eval": 1, "fvq.build": 2, "fvq.toy": 2, "fvq.train": 3,
          "fvq.evaluate": 3, "fvq.generation": 3}
HARNESS = ("sweeps", "analysis", "slurm", "submitit", "mlflow", "optuna")


def module_name(path: Path) -> str:
    parts = path.relative_to(FVQ.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room(module: str) -> str | None:
    return next((r for r in FLOORS if module == r or module.startswith(r + ".")), None)


def _type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (getattr(test, "id", None) == "TYPE_CHECKING"
                                         or getattr(test, "attr", None) == "TYPE_CHECKING")


def imports(tree: ast.AST, modules: set[str]) -> set[str]:
    """Every module an ``import`` names, the ones under ``if TYPE_CHECKING:`` (annotations, never run) aside;
    ``from fvq.core import dist`` names the module fvq.core.dist."""
    out: set[str] = set()
    for node in ast.iter_child_nodes(tree):
        if _type_checking(node):
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.update(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                       for a in node.names)
        out |= imports(node, modules)
    return out


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in sorted(FVQ.rglob("*.py"))}
    return {m: imports(ast.parse(p.read_text()), set(files)) for m, p in files.items()}


def test_every_module_has_a_room():
    assert [m for m in graph() if m != "fvq" and room(m) is None] == []


def test_imports_point_down():
    up = [f"{m} -> {t}" for m, targets in graph().items() for t in targets
          if room(m) and room(t) and room(m) != room(t) and FLOORS[room(t)] >= FLOORS[room(m)]]
    assert up == [], "arrows that do not point to a lower floor: " + ", ".join(sorted(up))


def test_no_import_cycle():
    full = graph()
    g = {m: {t for t in targets if t in full} for m, targets in full.items()}
    done: set[str] = set()

    def visit(m: str, path: tuple[str, ...]) -> None:
        assert m not in path, "import cycle: " + " -> ".join(path[path.index(m):] + (m,))
        if m not in done:
            for t in sorted(g.get(m, ())):
                visit(t, path + (m,))
            done.add(m)

    for m in sorted(g):
        visit(m, ())


def test_the_library_never_imports_the_harness():
    bad = [f"{m} -> {t}" for m, targets in graph().items() for t in targets if t.split(".")[0] in HARNESS]
    assert bad == []


def test_the_picture_is_drawn_from_real_imports():
    g = graph()  # guards the reader above: known arrows are seen, lazy and `from fvq.core import x` ones too
    assert "fvq.core.dist" in g["fvq.train"] and "fvq.core.protocol_presets" in g["fvq.core.data"]
    assert "fvq.eval.evaluate" in g["fvq.build"]  # imported inside a function
