"""The runtime stands apart from `training/`: nothing it loads imports the training package."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = ("generator", "bot", "jobs", "storage")  # never import training, not even inside a function
LAZY = ("melomania",)  # the CLI may, inside the commands that build data, train and export


def imported(tree: ast.AST, top_level_only: bool = False) -> list[tuple[int, str]]:
    """(line, module) for every absolute import in `tree` (or only those outside functions)."""
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out = []
    for node in nodes:
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                out.append((node.lineno, node.module))
            elif node.level > 1:  # `from .. import x` climbs out of its package: name what it reaches
                out += [(node.lineno, ".".join(filter(None, (node.module, a.name)))) for a in node.names]
    return out


def offending(packages: tuple[str, ...], top_level_only: bool) -> list[str]:
    bad = []
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for line, module in imported(tree, top_level_only):
                if module.split(".")[0] == "training":
                    bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return bad


def test_the_runtime_packages_import_nothing_of_training():
    assert (ROOT / "training" / "__init__.py").is_file()
    assert offending(RUNTIME, top_level_only=False) == []


def test_the_cli_imports_training_only_inside_its_commands():
    assert offending(LAZY, top_level_only=True) == []


def test_imports_walk_the_tree():
    source = "import training.jazz\nfrom .. import training\ndef f():\n    from training.train import export\n"
    tree = ast.parse(source)
    assert [m for _, m in imported(tree)] == ["training.jazz", "training", "training.train"]
    assert [m for _, m in imported(tree, top_level_only=True)] == ["training.jazz", "training"]


def test_loading_every_runtime_module_leaves_training_unloaded():
    code = (
        "import importlib, pkgutil, sys\n"
        f"for pkg in {RUNTIME + LAZY!r}:\n"
        "    importlib.import_module(pkg)\n"
        "    for info in pkgutil.walk_packages(sys.modules[pkg].__path__, pkg + '.'):\n"
        "        importlib.import_module(info.name)\n"
        "assert sys.modules['generator'].__file__.startswith(sys.argv[1]), sys.modules['generator'].__file__\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'training'))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code, str(ROOT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
