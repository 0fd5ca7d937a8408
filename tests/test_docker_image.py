"""The Docker image's file set, without a Docker engine: exactly what the Dockerfile's COPY lines
copy is installed into a fresh virtual environment, as the image's `pip install --no-deps .` does,
and the CLI is run from it, outside the repository, with the image's MELOMANIA_* defaults (its
/data mapped to a temporary folder). A package the Dockerfile leaves out is a ModuleNotFoundError
here, as it would be in the image. Takes some seconds: a wheel is built and a track composed."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
IMAGE_WORKDIR = "/app"  # where the COPY lines put the build context's files


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined, parts = [], []
    for line in dockerfile.read_text().splitlines():
        if not parts and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            parts.append(line.rstrip()[:-1])
            continue
        parts.append(line)
        joined.append(" ".join(parts).strip())
        parts = []
    out = []
    for text in joined:
        keyword, _, args = text.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def copies(dockerfile: Path) -> list[tuple[list[str], str]]:
    """Each COPY as (sources in the build context, destination in the image)."""
    workdir, found = "/", []
    for keyword, args in instructions(dockerfile):
        if keyword == "WORKDIR":
            workdir = os.path.join(workdir, args)
        elif keyword in ("COPY", "ADD"):
            words = json.loads(args) if args.startswith("[") else shlex.split(args)
            assert not any(w.startswith("--from") for w in words), "a multi-stage COPY: teach this test"
            words = [w for w in words if not w.startswith("--")]
            *sources, dest = words
            absolute = dest if dest.startswith("/") else os.path.join(workdir, dest)
            found.append((sources, absolute + ("/" if dest.endswith("/") or dest in (".", "./") else "")))
    return found


def image_env(dockerfile: Path, data: Path) -> dict[str, str]:
    """The image's MELOMANIA_* defaults, its /data replaced by `data`."""
    env = {}
    for keyword, args in instructions(dockerfile):
        if keyword == "ENV":
            for word in shlex.split(args):
                name, _, value = word.partition("=")
                if name.startswith("MELOMANIA_"):
                    env[name] = re.sub(r"/data\b", str(data), value)
    return env


def stage_build_context(dockerfile: Path, context: Path, image_root: Path) -> Path:
    """Copy what the COPY lines copy from `context` into `image_root`, as Docker would; returns
    the image's /app there."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for sources, dest in copies(dockerfile):
        assert dest.startswith(IMAGE_WORKDIR + "/") or dest == IMAGE_WORKDIR, f"COPY to {dest}: outside {IMAGE_WORKDIR}"
        target = image_root / dest.lstrip("/")
        for source in sources:
            src = context / source
            assert src.exists(), f"the Dockerfile copies {source}, which the build context lacks"
            if src.is_dir():  # Docker copies a folder's contents
                shutil.copytree(src, target, ignore=ignore, dirs_exist_ok=True)
            else:
                into = target / src.name if dest.endswith("/") or len(sources) > 1 else target
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, into)
    return image_root / IMAGE_WORKDIR.lstrip("/")


def fresh_venv(path: Path) -> Path:
    """A virtual environment of its own whose only sight of the test environment is its
    site-packages appended to sys.path (the dependencies, torch included, without reinstalling
    them). Appended, not added as a site dir: its .pth files (an editable install of this very
    repository among them) are not run, so nothing of the repository is importable from it."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    own = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    base = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(own, "_test_base_packages.pth").write_text("".join(f"{p}\n" for p in sorted(base)))
    return python


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    root = tmp_path_factory.mktemp("image")
    app = stage_build_context(DOCKERFILE, REPO, root / "fs")
    python = fresh_venv(root / "venv")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MELOMANIA_", "PYTHON"))}
    # --ignore-installed: the test environment's own melomania (seen through the .pth) is neither
    # counted as installed nor touched; the wheel is built from the copied files alone, with this
    # environment's setuptools where it has one (offline), else pip fetches one as the image's does.
    offline = ["--no-build-isolation", "--no-index"] if importlib.util.find_spec("setuptools") else []
    install = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--no-deps", "--ignore-installed", *offline, str(app)],
        capture_output=True,
        text=True,
        cwd=root,
        env=clean,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    data = root / "data"
    data.mkdir()
    env = clean | image_env(DOCKERFILE, data) | {"OMP_NUM_THREADS": "1", "MELOMANIA_THREADS": "1"}
    work = root / "work"  # not the repository: nothing of it on sys.path
    work.mkdir()
    return python, root / "venv" / "bin" / "melomania", env, work, data


def melomania(image, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    _, exe, env, work, _ = image
    return subprocess.run([exe, *args], capture_output=True, text=True, env=env, cwd=work, timeout=timeout)


def test_the_dockerfile_copies_every_package_of_the_distribution():
    import tomllib

    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    copied = {source.rstrip("/") for sources, _ in copies(DOCKERFILE) for source in sources}
    for pattern in packages["include"]:
        assert pattern.rstrip("*") in copied, f"{pattern} is packaged but the Dockerfile does not copy it"
    assert {"pyproject.toml", "README.md", "LICENSE", "configs"} <= copied


def test_the_image_env_puts_everything_under_data(tmp_path):
    env = image_env(DOCKERFILE, tmp_path)
    assert env["MELOMANIA_DATA_DIR"] == str(tmp_path)
    assert env["MELOMANIA_OUT_DIR"] == str(tmp_path / "out")
    assert env["MELOMANIA_DATABASE_URL"] == f"sqlite+aiosqlite:///{tmp_path}/melomania.db"  # absolute: four /


def test_the_installed_image_imports_only_its_own_copies(image):
    python, _, env, work, _ = image
    probe = "import json, importlib; print(json.dumps({m: importlib.import_module(m).__file__ for m in %r}))"
    names = ["melomania.cli", "bot.limits", "jobs.worker", "storage.migrate", "migrations", "training.train"]
    result = subprocess.run([python, "-c", probe % names], capture_output=True, text=True, env=env, cwd=work)
    assert result.returncode == 0, result.stderr
    venv = python.parent.parent
    for module, file in json.loads(result.stdout).items():
        assert Path(file).is_relative_to(venv), f"{module} came from {file}, not the image's install"


def test_the_cli_runs_from_the_image(image):
    for args, expected in [
        (["--help"], ("compose", "worker", "run", "db")),
        (["worker", "--help"], ("Redis",)),
        (["run", "--help"], ("telegram", "discord", "all")),
    ]:
        result = melomania(image, *args)
        assert result.returncode == 0, result.stdout + result.stderr
        for word in expected:
            assert word in result.stdout, (args, result.stdout)


def test_the_image_creates_its_database_under_data(image):
    data = image[4]
    result = melomania(image, "db", "upgrade")
    assert result.returncode == 0, result.stdout + result.stderr
    with sqlite3.connect(data / "melomania.db") as db:
        tables = {row[0] for row in db.execute("select name from sqlite_master where type = 'table'")}
    assert {"alembic_version", "tracks", "jobs"} <= tables, tables


def test_the_image_composes_a_track_with_its_shipped_model_into_data_out(image):
    data = image[4]
    result = melomania(image, "compose", "ambient", "--seconds", "5", "--seed", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    written = {p.suffix for p in (data / "out").iterdir()}
    assert {".mp3", ".mid", ".png"} <= written, written
    assert all(p.stat().st_size > 1000 for p in (data / "out").glob("*.mp3"))
