"""`fleet[client]` installed into an environment of its own, as a robot's computer would have it.

Its dependencies are resolved from the package's own metadata with requirements.lock as constraints (the versions the
fleet runs); the environment is cached under ~/.cache/fleet/ by the hash of those, and fleet itself is rebuilt from
the checkout on every call, so the test exercises the code under test.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(
    os.environ.get("FLEET_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fleet"
)
UV = CACHE / "uv-0.13.8" / "bin" / "uv"  # installed by scripts/venv.sh


def _uv(*args: str) -> None:
    env = {**os.environ, "UV_CACHE_DIR": str(CACHE / "uv-cache")}
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run([str(UV), *args], capture_output=True, text=True, env=env, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"uv {' '.join(args[:2])} failed:\n{done.stderr[-3000:]}")


def client_python(src: Path) -> str:
    """The interpreter of an environment with `fleet[client]` installed, built from a copy of the checkout's
    `fleet/` package in `src` (what a robot's install holds of the services is not under test here)."""
    src.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "fleet", src / "fleet", ignore=shutil.ignore_patterns("__pycache__"))
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    key = hashlib.sha256(repr(dependencies).encode() + (ROOT / "requirements.lock").read_bytes()).hexdigest()[:16]
    venv = CACHE / f"client-venv-{key}"
    python = str(venv / "bin" / "python")
    install = ("pip", "install", "--quiet", "--python", python, "-c", str(ROOT / "requirements.lock"))
    if not (venv / ".complete").exists():
        shutil.rmtree(venv, ignore_errors=True)
        _uv("venv", "--quiet", "--python", sys.executable, str(venv))
        _uv(*install, f"{src}[client]")
        (venv / ".complete").touch()
    _uv(*install, "--reinstall-package", "fleet", f"{src}[client]")
    return python
