"""Hot reload: learn of new model versions, fetch and verify them off the control loop, swap between chunks.

A background thread owns everything slow. It wakes on a `fleet.models` event (push) or every
`poll_interval_s` (fallback), asks the registry which version the alias points at (a robot following
`production` runs the `canary` version instead while a rollout's cohort includes it: `fleet.canary`), checks that a
trusted key signed it (the learner's: `fleet.signing`; an unsigned or foreign version is refused
before anything is downloaded), downloads it, verifies it (both files against the signed sha256s,
tensor shapes, finiteness: `fleet.policy.checkpoint`) and loads it into a *standby* slot. The
control loop calls `take_ready()` at each chunk boundary: a non-blocking check that hands over the
standby policy if one is waiting. The policy a swap replaced stays loaded: going back to it (a canary rolled back,
a version rolled back) is a swap at the next chunk, with no download or load. A bad, unsigned or foreign checkpoint
is refused, reported
(`refused`, so it shows in the heartbeat), never retried for the same version and sha256, and the robot keeps
acting on its current version. Nothing here ever blocks the control loop.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet.canary import CANARY, Cohort
from fleet.registry_views import RobotRegistry
from fleet.signing import SignedVersion, TrustedKeys, verify_version

log = logging.getLogger(__name__)


# (checkpoint_dir, what the signature vouches for) -> a ready policy, raising on any verification failure; it must
# load only files with the signed sha256s.
PolicyLoader = Callable[[Path, SignedVersion], Any]


@dataclass(frozen=True)
class ReloadConfig:
    """How a robot follows the registry."""

    alias: str = "production"  # the alias this robot runs
    # Following `production`, run the `canary` version while its cohort includes this robot. False keeps a robot out
    # of every rollout (a robot on a customer's site, say).
    follow_canary: bool = True
    poll_interval_s: float = 10.0  # fallback poll of the alias when no event arrives
    download_root: Path | None = None  # where downloads go (a private temp dir when None)
    # After a `fleet.models` event, wait this long before looking: a fleet gives its robots different delays
    # (FleetConfig.reload_stagger_s) so they do not all download, load and warm up the same version at once.
    event_delay_s: float = 0.0

    def __post_init__(self) -> None:
        if self.poll_interval_s <= 0:
            raise ValueError("poll_interval_s must be positive")
        if self.event_delay_s < 0:
            raise ValueError("event_delay_s must be >= 0")


@dataclass
class Swap:
    """A verified policy waiting in the standby slot."""

    version: str
    sha256: str
    policy: Any
    channel: str  # the alias it came from: "production", "canary", ...
    ready_at: float  # time.monotonic() when it became ready (for reload-latency metrics)
    load_s: float  # download + verify + load time


@dataclass
class ReloadStats:
    """Counters for heartbeats and metrics."""

    checks: int = 0
    loaded: int = 0
    refused: dict[str, str] = field(default_factory=dict)  # version -> reason
    load_seconds: list[float] = field(default_factory=list)  # Swap.load_s of every load (fleet_robot_reload_seconds)
    last_error: str | None = None


class HotReloader:
    """Follows one registry alias in a background thread; see the module docstring."""

    def __init__(
        self,
        config: ReloadConfig,
        *,
        registry: RobotRegistry,
        loader: PolicyLoader,
        keys: TrustedKeys,
        current_version: str | None = None,
        robot_id: str = "robot",
        warmup: Callable[[Any], None] | None = None,
        pace: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.registry = registry
        self.loader = loader
        # The public keys whose signatures this robot accepts (`fleet.signing.load_trusted_keys`).
        self.keys = keys
        self.robot_id = robot_id
        # Runs one inference with a freshly loaded policy here, off the control loop, so its first
        # (slow: allocations, lazy init) call never lands on a control tick after the swap.
        self.warmup = warmup
        # Called before each slow step (lookup, download, load, warm-up) to wait for the control loop's slack
        # between ticks (RobotRuntime.wait_for_slack); None = no pacing.
        self.pace = pace
        self.stats = ReloadStats()
        # The latest slow steps as (monotonic start, end, name), so a missed control tick can say which ones ran
        # beside it (`busy_within`); the step in progress is in `_running`.
        self.steps: deque[tuple[float, float, str]] = deque(maxlen=64)
        self._running: tuple[float, str] | None = None
        self._current = current_version  # version the control loop runs (or will after the pending swap)
        self.channel = config.alias  # the alias `_current` came from (heartbeats say it)
        # (version, sha256) of refused versions: never looked at again. Keyed by the version too, so refusing one
        # version (e.g. a replay of older bytes under a newer number) does not block a rollback to the real one.
        self._refused: set[tuple[str, str]] = set()
        self._standby: Swap | None = None
        # What the control loop runs (the last swap handed over) and what it ran before: kept loaded so a rollback
        # to it is instant (one more policy in memory).
        self._in_use: Swap | None = None
        self._retired: Swap | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._root = config.download_root or Path(tempfile.mkdtemp(prefix=f"fleet-{robot_id}-models-"))

    # ---- control-loop side (never blocks) --------------------------------------------------------
    def take_ready(self) -> Swap | None:
        """At a chunk boundary: the verified standby policy, if one is waiting (non-blocking)."""
        if self._standby is None or not self._lock.acquire(blocking=False):
            return None
        try:
            swap, self._standby = self._standby, None
            if swap is not None:
                if self._in_use is not None and self._in_use.version != swap.version:
                    self._retired = self._in_use
                self._in_use = swap
            return swap
        finally:
            self._lock.release()

    def notify(self) -> None:
        """A `fleet.models` event arrived: check the alias now instead of at the next poll."""
        self._wake.set()

    # ---- background side ------------------------------------------------------------------------
    def start(self) -> HotReloader:
        self._thread = threading.Thread(target=self._run, name=f"reload-{self.robot_id}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        shutil.rmtree(self._root, ignore_errors=True)

    @contextmanager
    def _step(self, name: str) -> Iterator[None]:
        """One slow step: waits for the control loop's slack (`pace`), then runs and is timed into `steps`."""
        if self.pace is not None:
            self.pace()
        started = time.monotonic()
        self._running = (started, name)
        try:
            yield
        finally:
            self._running = None
            self.steps.append((started, time.monotonic(), name))

    def busy_within(self, start: float, end: float) -> dict[str, float]:
        """Seconds of [start, end] (monotonic) each slow step ran, by step name (steps that did not overlap: absent)."""
        running = self._running
        spans = list(self.steps) + ([(running[0], end, running[1])] if running is not None else [])
        out: dict[str, float] = {}
        for a, b, name in spans:
            overlap = min(b, end) - max(a, start)
            if overlap > 0:
                out[name] = out.get(name, 0.0) + overlap
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            self.check_once()
            notified = self._wake.wait(self.config.poll_interval_s)
            self._wake.clear()
            if notified and self.config.event_delay_s:
                self._stop.wait(self.config.event_delay_s)

    def check_once(self) -> Swap | None:
        """One look at the alias; loads into the standby slot when it moved. Safe to call from tests."""
        self.stats.checks += 1
        try:
            with self._step("lookup"):
                info, channel = self._lookup()
        except Exception as err:  # noqa: BLE001 - registry down: keep acting, try again later
            self.stats.last_error = f"registry: {err}"
            log.warning("alias check failed", extra={"robot": self.robot_id, "error": str(err)})
            return None
        if info is None:
            return None
        if info.version == self._current:
            self.channel = channel  # e.g. the canary this robot runs was promoted: same weights, now production
            return None
        refusal_key = (info.version, info.sha256)
        if refusal_key in self._refused:
            return None
        started = time.monotonic()
        retired = self._retired
        if retired is not None and (retired.version, retired.sha256) == refusal_key:
            try:  # the same signed weights it ran before: still loaded, swapped back without a download
                verify_version(self.keys, model_name=self.registry.name, version=info.version, tags=info.tags)
            except Exception as err:  # noqa: BLE001 - the registry no longer vouches for it: load it the long way
                log.warning("retired version not reused", extra={"robot": self.robot_id, "error": str(err)})
            else:
                return self._ready(Swap(info.version, info.sha256, retired.policy, channel, time.monotonic(),
                                        time.monotonic() - started))  # fmt: skip
        target = self._root / f"v{info.version}-{info.sha256[:12]}"
        try:
            # The signature first: a version no trusted key signed is refused before a byte of it is downloaded.
            signed = verify_version(self.keys, model_name=self.registry.name, version=info.version, tags=info.tags)
            shutil.rmtree(target, ignore_errors=True)
            with self._step("download"):
                local = self.registry.download(info.version, target)
            with self._step("load"):
                policy = self.loader(Path(local), signed)
            if self.warmup is not None:
                with self._step("warm-up"):
                    self.warmup(policy)
        except Exception as err:  # noqa: BLE001 - any failure means: refuse, report, keep the current one
            reason = f"{err.__class__.__name__}: {err}"
            self.stats.refused[info.version] = reason
            self.stats.last_error = reason
            self._refused.add(refusal_key)
            log.error(
                "checkpoint refused",
                extra={"robot": self.robot_id, "version": info.version, "reason": reason},
            )
            return None
        finally:
            shutil.rmtree(target, ignore_errors=True)
        return self._ready(
            Swap(info.version, info.sha256, policy, channel, time.monotonic(), time.monotonic() - started)
        )

    def _ready(self, swap: Swap) -> Swap:
        """Put a verified policy in the standby slot for the control loop's next chunk boundary."""
        with self._lock:
            self._standby = swap
            self._current = swap.version
            self.channel = swap.channel
        self.stats.loaded += 1
        self.stats.load_seconds.append(swap.load_s)
        log.info(
            "standby ready",
            extra={"robot": self.robot_id, "version": swap.version, "channel": swap.channel, "load_s": swap.load_s},
        )
        return swap

    def _lookup(self) -> tuple[Any, str]:
        """(the version this robot should run, the alias it came from): the canary while a rollout's cohort includes
        this robot, else its own alias. A canary whose cohort it cannot read is a canary it does not join."""
        if self.config.follow_canary and self.config.alias == "production":
            canary = self.registry.version_for_alias(CANARY)
            cohort = Cohort.from_tags(canary.tags) if canary is not None else None
            if canary is not None and cohort is not None and cohort.includes(self.robot_id):
                return canary, CANARY
        return self.registry.version_for_alias(self.config.alias), self.config.alias
