"""The layering rules, read from the source (function-level imports count too):

* only `facepipe/defs/` and `facepipe/definitions.py` import dagster;
* nothing in facepipe imports `facepipe.definitions` (it is Dagster's entry point, not a service locator);
* only `facepipe/settings.py` reads the environment;
* no import cycles among facepipe's modules;
* the query commands and the HTTP API load without Dagster.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "facepipe"


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(name: str, path: Path) -> set[str]:
    """Every module name an import statement in the file names (`from a import b` gives a and a.b)."""
    names: set[str] = set()
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {
        name: {
            other
            for other in mods
            if other != name and other in imported(name, path) and not name.startswith(other + ".")
        }
        for name, path in mods.items()
    }


def is_shell(name: str) -> bool:
    return name == "facepipe.definitions" or name.startswith("facepipe.defs")


def test_only_the_dagster_shell_imports_dagster():
    offenders = [
        name
        for name, path in modules().items()
        if not is_shell(name) and any(i.split(".")[0] in ("dagster", "dagster_webserver") for i in imported(name, path))
    ]
    assert offenders == [], f"dagster imported outside facepipe/defs: {offenders}"


def test_nothing_imports_the_definitions():
    offenders = [
        n for n, p in modules().items() if n != "facepipe.definitions" and "facepipe.definitions" in imported(n, p)
    ]
    assert offenders == []


def _environment_reads(tree: ast.AST) -> list[int]:
    """Lines that read `os.environ` or call `os.getenv`; setting a variable (a worker's thread count for
    the libraries it loads) is not reading configuration."""
    writes = {
        id(target.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Subscript)
    }
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr in ("environ", "getenv")
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
        and id(node) not in writes
    ]


def test_only_settings_reads_the_environment():
    offenders = []
    for name, path in modules().items():
        if name != "facepipe.settings":
            offenders += [f"{name}:{line}" for line in _environment_reads(ast.parse(path.read_text()))]
    assert offenders == [], f"os.environ read outside facepipe.settings: {offenders}"


def test_no_import_cycles():
    edges = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the path, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_query_commands_and_the_api_load_without_dagster():
    code = (
        "import sys, facepipe.cli, facepipe.api, facepipe.query, facepipe.library, facepipe.people; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'dagster'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
