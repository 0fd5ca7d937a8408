"""Arrows point one way: bot → jobs → generator and storage. Checked on the import graph itself,
in a fresh interpreter, so what one test imported cannot hide what another module drags in."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(package: str) -> dict[str, set[str]]:
    """Every absolute module each file of `package` imports (relative imports resolved)."""
    out: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        names: set[str] = set()
        parts = path.relative_to(ROOT).with_suffix("").parts
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = parts[: len(parts) - node.level]
                    names.add(".".join([*base, node.module] if node.module else base))
                else:
                    names.add(node.module or "")
        out[str(path.relative_to(ROOT))] = names
    return out


@pytest.mark.parametrize(
    "package, forbidden",
    [
        ("jobs", ("melomania", "bot")),
        ("storage", ("melomania", "bot", "jobs")),
        ("generator", ("melomania", "bot", "jobs", "storage")),
    ],
)
def test_lower_layers_import_nothing_above_them(package, forbidden):
    upward = {
        f"{file} imports {name}"
        for file, names in imported_modules(package).items()
        for name in names
        if name.split(".")[0] in forbidden
    }
    assert not upward


def loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_a_redis_mode_bot_loads_neither_the_model_nor_the_runner():
    loaded = loaded_after("import jobs.redis_backend, jobs.api")
    assert not {"torch", "jobs.inprocess", "jobs.worker", "generator.model"} & loaded
