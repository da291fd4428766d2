"""Background service processes tracked by pid files: start detached, find again, stop for good.

Each service runs in its own session (process group), so `stop()` also ends the children it spawned
(MLflow's workers) and `fleet down` leaves no process behind. The pid file records the command line,
so a recycled pid is never mistaken for the service.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from fleet.stack.errors import StackError


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on (host, port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (for tests and throw-away stacks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_block(size: int, host: str = "127.0.0.1") -> int:
    """A base port with `size` free ports from it, below the kernel's ephemeral range (from 32768 on Linux): a service
    restarted on its old port (a killed broker) then never finds it taken by a client connection's local port. The
    search starts at a random block, so stacks set up side by side (a test beside a bench) rarely pick the same one
    between the choice and their bind."""
    bases = list(range(21000, 32768 - size, size + 1))
    first = random.randrange(len(bases))
    for base in bases[first:] + bases[:first]:
        if not any(port_in_use(host, base + i) for i in range(size)):
            return base
    raise StackError(f"no block of {size} free ports below 32768")


def isolated_env(home: Path | str) -> dict[str, str]:
    """FLEET_* variables for a throw-away stack under `home` on free ports (tests, benches): export them first. The
    ports come from `port_block`, so a broker a fault test restarts gets its own port back."""
    base = port_block(4)
    return {
        "FLEET_HOME": str(home),
        "FLEET_KAFKA_PORT": str(base),
        "FLEET_KAFKA_CONTROLLER_PORT": str(base + 1),
        "FLEET_MLFLOW_PORT": str(base + 2),
        "FLEET_DASHBOARD_PORT": str(base + 3),
    }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as dead.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22): with the pid, its identity."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [part.decode(errors="replace") for part in f.read().split(b"\0") if part]
    except OSError:
        return []


@dataclass
class ManagedProcess:
    """One detached service process with a pid file and a log file."""

    name: str  # service name used in messages and file names
    argv: list[str]  # command line to start it
    run_dir: Path  # where the pid file lives
    log_path: Path  # stdout and stderr of the process
    env: dict[str, str] = field(default_factory=dict)  # extra environment variables
    cwd: Path | None = None  # working directory

    @property
    def pid_path(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    def pid(self) -> int | None:
        """The pid of the running service, or None (stale pid files are removed)."""
        try:
            record = json.loads(self.pid_path.read_text())
            pid = int(record["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if _alive(pid):
            # Same pid and start time: our process, even in the instant between fork and exec when its
            # cmdline is still the parent's (seen under load). Older pid files without a start time: cmdline.
            started = record.get("started")
            if started is not None and started == _start_ticks(pid):
                return pid
            if started is None and _cmdline(pid)[:3] == record.get("argv", [])[:3]:
                return pid
        self.pid_path.unlink(missing_ok=True)
        return None

    def start(self) -> int:
        existing = self.pid()
        if existing is not None:
            return existing
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            try:
                proc = subprocess.Popen(
                    self.argv,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=self.cwd,
                    env={**os.environ, **self.env},
                    start_new_session=True,
                )
            except OSError as err:
                raise StackError(f"could not start {self.name} ({self.argv[0]}): {err}") from None
        record = {"pid": proc.pid, "argv": self.argv, "started": _start_ticks(proc.pid)}
        self.pid_path.write_text(json.dumps(record))
        return proc.pid

    def exited_early(self) -> bool:
        """True when the pid file exists but the process is gone (it crashed during start-up)."""
        return self.pid_path.exists() and self.pid() is None

    def stop(self, timeout_s: float = 20.0) -> bool:
        """SIGTERM the process group, SIGKILL it after `timeout_s`; True if something was stopped."""
        pid = self.pid()
        if pid is None:
            return False
        for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _group_alive(pid):
                _reap(pid)
                time.sleep(0.1)
            if not _group_alive(pid):
                break
        _reap(pid)
        self.pid_path.unlink(missing_ok=True)
        return True

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _group_alive(pgid: int) -> bool:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        # fields[0] = state, fields[2] = pgrp
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
