"""The package's import structure: a closed core (configuration, modeling, image processing import nothing else of
the package, so a checkpoint saved with its code carries exactly those three files) and no import circles."""

import ast
import re
from pathlib import Path

import segvit_hf

PACKAGE_DIR = Path(segvit_hf.__file__).resolve().parent
CORE = {"configuration_segvit", "modeling_segvit", "image_processing_segvit"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_imports(path: Path) -> set[str]:
    """The package's modules that `path` imports, at module level or inside functions, relatively or absolutely."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    imported = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join([*base, *([node.module] if node.module else [])])
            elif node.module and node.module.split(".")[0] == "segvit_hf":
                target = node.module.removeprefix("segvit_hf").lstrip(".")
            else:
                continue
            candidates = [target] + [f"{target}.{alias.name}".lstrip(".") for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [
                alias.name.removeprefix("segvit_hf").lstrip(".")
                for alias in node.names
                if alias.name.split(".")[0] == "segvit_hf"
            ]
        else:
            continue
        imported.update(candidate for candidate in candidates if candidate in MODULES)
    imported.discard(name)
    return imported


MODULES = {module_name(path): path for path in PACKAGE_DIR.rglob("*.py")}
GRAPH = {name: package_imports(path) for name, path in MODULES.items()}


def test_the_graph_sees_the_package():
    assert CORE <= set(GRAPH)
    assert "modeling_segvit" in GRAPH["image_processing_segvit"]
    assert "pretrained" in GRAPH  # modules found at any depth, function-level imports included (see below)


def test_the_core_imports_only_the_core():
    for name in CORE:
        assert GRAPH[name] <= CORE, f"{name} imports {sorted(GRAPH[name] - CORE)}, outside the core"


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of `graph` (module -> modules it imports) as `[a, b, ..., a]`, or None."""
    state: dict[str, str] = {}

    def visit(name, path):
        state[name] = "open"
        for target in sorted(graph.get(name, ())):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (circle := visit(target, [*path, target])):
                return circle
        state[name] = "done"
        return None

    for name in sorted(graph):
        if name not in state and (circle := visit(name, [name])):
            return circle
    return None


def test_the_circle_finder_finds_circles():
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_circles():
    # The package root ("") counts too: a module importing from `segvit_hf` itself would close a circle through it.
    assert find_circle(GRAPH) is None, " -> ".join(find_circle(GRAPH))


def documented_map() -> dict[str, set[str]]:
    """docs/architecture.md's package map: module -> the package modules it may import ("core": the three)."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text.split("## Package map", 1)[1].split("\n## ", 1)[0]
    allowed = {}
    for row in re.finditer(r"^\| `([\w.]+)` \|.*\| ([^|]+) \|$", section, re.M):
        names = set(re.findall(r"`([\w.]+)`", row.group(2)))
        if re.search(r"\bcore\b", row.group(2)):
            names |= CORE
        allowed[row.group(1)] = names
    return allowed


def test_the_package_map_in_the_docs_matches_the_code():
    allowed = documented_map()
    modules = {name or "__init__" for name, path in MODULES.items() if path.name != "__init__.py" or not name}
    assert set(allowed) == modules
    for name, imported in GRAPH.items():
        if name in {"evaluate_metrics", "evaluate_metrics.segvit_mean_iou"}:
            continue  # package folders of the evaluate module
        key = name or "__init__"
        assert imported <= allowed[key], f"{key} imports {sorted(imported - allowed[key])}, not in the package map"
