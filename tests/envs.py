"""Python environments of their own for tests that must not run in fleet's venv: `fleet[client]` as a robot's
computer has it, and other projects' clients (openpi's) with their own pins.

Each environment is created once under ~/.cache/fleet/ (keyed by the hash of what it holds) with the uv that
scripts/venv.sh installs; what is under test (fleet itself) is reinstalled from the checkout on every call.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(
    os.environ.get("FLEET_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fleet"
)
UV = CACHE / "uv-0.13.8" / "bin" / "uv"  # installed by scripts/venv.sh
LOCK = ROOT / "requirements.lock"


def interpreter_for(version: str) -> str:
    """The path of an installed Python `version` (e.g. "3.12"): on PATH, or under pyenv's root (its shims answer only
    for the active version). No download: a machine without one fails the caller with this error."""
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    installed = sorted(root.glob(f"{version}.*")) if root.is_dir() else []
    candidates = [shutil.which(f"python{version}"), *(str(p / "bin" / f"python{version}") for p in installed)]
    for candidate in filter(None, candidates):
        if subprocess.run([candidate, "--version"], capture_output=True).returncode == 0:
            return candidate
    raise RuntimeError(f"no Python {version} on this machine (looked on PATH and in {root})")


def _uv(*args: str) -> None:
    env = {**os.environ, "UV_CACHE_DIR": str(CACHE / "uv-cache")}
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run([str(UV), *args], capture_output=True, text=True, env=env, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"uv {' '.join(args[:2])} failed:\n{done.stderr[-3000:]}")


def cached_env(
    name: str, requirements: Sequence[str], *, constraints: Path | None = None, interpreter: str | None = None
) -> str:
    """The interpreter of a venv holding `requirements` (resolved within `constraints`), created on first use with
    Python `interpreter` (a version such as "3.12", found by `interpreter_for`; default: this one)."""
    key = hashlib.sha256(
        repr([*requirements, interpreter]).encode() + (constraints.read_bytes() if constraints else b"")
    )
    venv = CACHE / f"{name}-venv-{key.hexdigest()[:16]}"
    python = str(venv / "bin" / "python")
    if not (venv / ".complete").exists():
        shutil.rmtree(venv, ignore_errors=True)
        python_ = interpreter_for(interpreter) if interpreter else sys.executable
        _uv("venv", "--quiet", "--python", python_, "--python-preference", "only-system", str(venv))
        _uv("pip", "install", "--quiet", "--python", python, *(("-c", str(constraints)) if constraints else ()),
            *requirements)  # fmt: skip
        (venv / ".complete").touch()
    return python


def client_python(src: Path) -> str:
    """The interpreter of an environment with `fleet[client]` installed: dependencies resolved from the package's
    own metadata within requirements.lock's pins, fleet built from a copy of the checkout's `fleet/` package in
    `src` (what a robot's install holds of the services is not under test here)."""
    src.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "fleet", src / "fleet", ignore=shutil.ignore_patterns("__pycache__"))
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    python = cached_env("client", dependencies, constraints=LOCK)
    _uv("pip", "install", "--quiet", "--python", python, "-c", str(LOCK), "--reinstall-package", "fleet",
        f"{src}[client]")  # fmt: skip
    return python
