"""Login throttling: too many failed logins for one user name or from one client answer 429 with Retry-After.

Failures are counted per key (`user:<name>`, `client:<address>`) in a sliding window
(`FLEET_LOGIN_WINDOW_S`, limits `FLEET_LOGIN_MAX_FAILURES` / `FLEET_LOGIN_MAX_FAILURES_PER_CLIENT`). The check
runs before the password is verified, so a locked-out guesser costs no argon2 work. A successful login clears its
user name's failures but not the client's: otherwise one valid account would let a client keep spraying guesses
at other accounts. State is per dashboard process and in memory (a restart forgets it; behind several processes
each counts on its own, so the effective limit is per process).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Attempt:
    """One login attempt as `LoginThrottle.begin` saw it: refused (`retry_after_s`), or counted (`stamp`)."""

    stamp: float | None  # when it was counted (pass it to `succeeded`); None when refused
    retry_after_s: int | None  # whole seconds until this user name and client may try again; None when counted

    @property
    def refused(self) -> bool:
        return self.retry_after_s is not None


class LoginThrottle:
    """Sliding-window failure counters with a bounded number of tracked keys (oldest forgotten first)."""

    def __init__(
        self,
        *,
        max_per_user: int,
        max_per_client: int,
        window_s: float,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_per_user < 1 or max_per_client < 1 or window_s <= 0 or max_keys < 1:
            raise ValueError("LoginThrottle limits and window must be positive")
        self.max_per_user = max_per_user
        self.max_per_client = max_per_client
        self.window_s = window_s
        self.max_keys = max_keys  # bounds memory when a guesser cycles through random user names
        self.clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def keys(username: str, client: str | None) -> tuple[str, str]:
        return f"user:{username.strip().lower()}", f"client:{client or 'unknown'}"

    def begin(self, username: str, client: str | None) -> Attempt:
        """Check and count one login attempt in one locked step. While this user name or client is locked, counts
        nothing and says how long to wait (`Attempt.retry_after_s`); else counts the attempt as a failure at once and
        returns its stamp for `succeeded`. Checking first and counting after the password check let concurrent
        guesses all pass one check before any was counted; here each attempt sees every one begun before it."""
        user_key, client_key = self.keys(username, client)
        now = self.clock()
        with self._lock:
            waits = []
            for key, limit in ((user_key, self.max_per_user), (client_key, self.max_per_client)):
                times = self._recent(key, now)
                if times is not None and len(times) >= limit:
                    waits.append(times[len(times) - limit] + self.window_s - now)
            if waits:
                return Attempt(stamp=None, retry_after_s=max(1, math.ceil(max(waits))))
            self._record((user_key, client_key), now)
        return Attempt(stamp=float(now), retry_after_s=None)

    def failed(self, username: str, client: str | None) -> None:
        """Count one failure (an attempt `begin` did not see)."""
        with self._lock:
            self._record(self.keys(username, client), self.clock())

    def succeeded(self, username: str, client: str | None = None, stamp: float | None = None) -> None:
        """The attempt begun at `stamp` logged in: its user name's failures are cleared; the client's stay (one valid
        account must not let a client spray guesses at others), less this attempt's own count."""
        user_key, client_key = self.keys(username, client)
        with self._lock:
            self._failures.pop(user_key, None)
            times = self._failures.get(client_key)
            if stamp is not None and times is not None and stamp in times:
                times.remove(stamp)
                if not times:
                    del self._failures[client_key]

    def _record(self, keys: tuple[str, ...], now: float) -> None:
        for key in keys:
            times = self._recent(key, now)
            if times is None:
                times = self._failures[key] = deque()
            times.append(now)
            self._failures.move_to_end(key)
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times
