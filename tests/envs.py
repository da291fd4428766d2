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
    `interpreter` (a path, or a version uv can find, e.g. "3.12"; default: this one)."""
    key = hashlib.sha256(
        repr([*requirements, interpreter]).encode() + (constraints.read_bytes() if constraints else b"")
    )
    venv = CACHE / f"{name}-venv-{key.hexdigest()[:16]}"
    python = str(venv / "bin" / "python")
    if not (venv / ".complete").exists():
        shutil.rmtree(venv, ignore_errors=True)
        _uv("venv", "--quiet", "--python", interpreter or sys.executable, str(venv))
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
