"""The architecture contract (docs/architecture.md): components form layers, nothing
imports upward, no import cycles inside a component, no function-local import of our
own code, one home per wire format, no test hooks read from the environment."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = ["protocol", "backup", "node", "compute", "restore", "sql", "playground", "operator", "rig", "cli"]


def production_files() -> list[Path]:
    return sorted(p for c in COMPONENTS for p in (ROOT / c).rglob("*.py"))


def test_every_component_is_in_the_checked_contract() -> None:
    """A new component folder must be added to the layers (and to this list)."""
    packages = {p.parent.name for p in ROOT.glob("*/tidemark_*/__init__.py")}
    assert packages == {f"tidemark_{c}" for c in COMPONENTS}
    config = (ROOT / "pyproject.toml").read_text()
    for package in packages:
        assert f'"{package}' in config.split("[tool.importlinter]")[1], package


def test_import_contracts_hold() -> None:
    """import-linter over every component (function-local imports included)."""
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def _local_imports(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("tidemark_")):
                    found.append((node.lineno, "." * node.level + (node.module or "")))
                elif isinstance(node, ast.Import):
                    found += [(node.lineno, a.name) for a in node.names if a.name.startswith("tidemark_")]
    return found


def test_no_function_local_imports_of_our_own_code() -> None:
    """A function-local import of a Tidemark module hides a cycle or an upward arrow
    from a reader; every such import is at the top of its module."""
    offenders = [f"{p.relative_to(ROOT)}:{line} imports {mod}"
                 for p in production_files() for line, mod in _local_imports(ast.parse(p.read_text()))]
    assert not offenders, "\n".join(offenders)


def _string_constants(path: Path) -> list[str]:
    return [n.value for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, ast.Constant) and isinstance(n.value, str)]


@pytest.mark.parametrize("fmt", ["<BBHIQQQQI", "<4sQQQQI", "<IQI", ">cIQQ"])
def test_each_wire_format_is_declared_once(fmt: str) -> None:
    """Record header, frame header, frame group header, page-version key."""
    homes = [str(p.relative_to(ROOT)) for p in production_files() for s in _string_constants(p) if s == fmt]
    assert len(homes) == 1, f"{fmt!r} declared in {homes}"


def test_no_production_code_reads_a_crash_point_or_fault_switch_from_the_environment() -> None:
    """Crash points and fault injection are set up by the tests, never by an
    environment variable that production code reads."""
    offenders = [f"{p.relative_to(ROOT)}: {s}" for p in production_files() for s in _string_constants(p)
                 if s.startswith("TIDEMARK_") and ("CRASH" in s or "FAKE" in s or "FAULT" in s)]
    assert not offenders, "\n".join(offenders)


def test_only_the_cli_imports_the_rig() -> None:
    """The test rig (control plane, MinIO, pod runner) is a development tool: no
    component's runtime code depends on it."""
    offenders = []
    for p in production_files():
        if p.is_relative_to(ROOT / "cli") or p.is_relative_to(ROOT / "rig"):
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            offenders += [f"{p.relative_to(ROOT)}:{node.lineno}" for n in names if n.startswith("tidemark_rig")]
    assert not offenders, offenders


SANS_IO_MODULES = {"socket", "asyncio", "time", "os", "pathlib", "shutil", "subprocess", "threading", "selectors"}


def test_the_protocol_is_sans_io() -> None:
    """The protocol layer is fed events: it opens no socket, file or process and reads no
    clock (callers say what time it is)."""
    found = []
    for path in sorted((ROOT / "protocol").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.name}: import {n}" for n in names if n.split(".")[0] in SANS_IO_MODULES]
            if isinstance(node, ast.Call):
                fn = node.func
                called = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else ""
                if called in {"now", "utcnow", "today", "open"}:
                    found.append(f"{path.name}:{node.lineno}: {called}()")
    assert not found, found
