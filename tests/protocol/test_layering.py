"""The core stays sans-IO: no trio, socket, time or random in the protocol modules, and
faults depend on pbft, never the reverse."""

from __future__ import annotations

import ast
from pathlib import Path

import pbft

PACKAGE = Path(pbft.__file__).parent
#: Drivers of the core: the only modules of pbft allowed to do I/O or draw randomness.
DRIVERS = {"simnet", "cli", "runtime", "sim", "bench", "storage", "trace"}
FORBIDDEN = {"trio", "socket", "time", "random", "asyncio", "selectors", "faults", "os"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def core_modules() -> list[Path]:
    modules = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0].removesuffix(".py") in DRIVERS:
            continue
        modules.append(path)
    return modules


def test_core_modules_import_no_io_clock_or_randomness() -> None:
    modules = core_modules()
    assert any(path.name == "replica.py" for path in modules)
    for path in modules:
        bad = imported_modules(path) & FORBIDDEN
        assert not bad, f"{path.relative_to(PACKAGE)} imports {sorted(bad)}"


def test_the_core_never_imports_faults() -> None:
    """faults depends on pbft, never the reverse; only the command line (the composition
    root that wires a traitor around an honest replica) may import it."""
    for path in core_modules():
        assert "faults" not in imported_modules(path), path
    for path in sorted((PACKAGE / "runtime").rglob("*.py")):
        assert "faults" not in imported_modules(path), path


#: faults' folders, each allowed to import only those listed after it.
FAULTS_LAYERS = {
    "traitors": set(),
    "verification": {"traitors"},
    "scenarios": {"traitors", "verification"},
}


def _faults_imports(path: Path) -> set[str]:
    """The faults sub-packages a module imports (``faults.X...`` -> X)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] == "faults" and len(parts) > 1:
                found.add(parts[1])
            elif node.module == "faults":
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "faults" and len(parts) > 1:
                    found.add(parts[1])
    return found


def test_faults_folders_depend_in_one_direction() -> None:
    """traitors <- verification <- scenarios: no cycles between the folders, and no
    module left in the flat top level."""
    import faults

    root = Path(faults.__file__).parent
    assert sorted(p.name for p in root.glob("*.py")) == ["__init__.py"]
    for layer, allowed in FAULTS_LAYERS.items():
        modules = sorted((root / layer).rglob("*.py"))
        assert modules, layer
        for path in modules:
            used = _faults_imports(path) - {layer}
            assert used <= allowed, f"{path.relative_to(root)} imports faults.{sorted(used)}"
