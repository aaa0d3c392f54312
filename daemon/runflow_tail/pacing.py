"""How fast we may go: the shared request rate limiter, retry backoff, Retry-After.

The limiter decides when a request may leave; each retry decision (whether and after how
long) stays with its caller (the poller, the delivery loop), so it is made in one place.
"""

from __future__ import annotations

import contextlib
import email.utils
import math
import random
import time
from collections.abc import AsyncIterator

import anyio

DEFAULT_BACKOFF_INITIAL = 1.0
DEFAULT_BACKOFF_MAX = 32.0
MAX_RETRY_AFTER = 3600.0
MAX_IN_FLIGHT = 32
"""Requests in flight at once per API key before any 429 (backfill asks for at most 32)."""
RESET_IS_EPOCH = 1e9
RESET_IS_EPOCH_MS = 1e12
_JITTER = random.Random()


class RateLimiter:
    """How fast and how many at once requests may go to one API key, shared by every stream,
    backfill window and run fetch that uses it (the API's limit is per organization).

    - **Rate**: requests are spaced at ``rate`` per second with a small burst (GCRA).
    - **Deadlines are a contract**: after ``pause(s)`` (a 429's Retry-After, or an
      exhausted ``X-RateLimit-Remaining``) no request leaves before the deadline, whoever
      sends it; a caller already waiting re-checks when it wakes.
    - **Concurrency** (``request()``): after a 429 the number of requests in flight
      collapses to half of what was in flight, then regrows by about one per round of
      successes (additive increase, multiplicative decrease, as TCP and botocore's
      adaptive retry mode do).
    """

    def __init__(self, rate: float, *, burst: int = 1, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        self._interval = 1.0 / rate
        self._tolerance = max(0, burst - 1) * self._interval
        self._theoretical_arrival = 0.0
        self._resume_at = 0.0
        self.max_in_flight = max_in_flight
        self.window = float(max_in_flight)
        """How many requests may be in flight now (AIMD)."""
        self.in_flight = 0
        self._freed: anyio.Event | None = None
        """Set when a place frees up (made on first need: it belongs to an event loop)."""

    @property
    def rate(self) -> float:
        """Requests per second this limiter allows."""
        return 1.0 / self._interval

    async def acquire(self) -> None:
        """Wait until this request may leave: past every deadline, at the limiter's rate."""
        while True:
            now = anyio.current_time()
            if now < self._resume_at:
                await anyio.sleep(self._resume_at - now)
                continue
            # Reserve a place in the schedule first, so waiters leave in order, one
            # interval apart.
            arrival = max(self._theoretical_arrival, now)
            self._theoretical_arrival = arrival + self._interval
            wait = arrival - now - self._tolerance
            if wait > 0:
                await anyio.sleep(wait)
            if anyio.current_time() >= self._resume_at:
                return
            # A pause came while this one waited: its place is void; wait for the deadline
            # and take a new one (never a burst of everyone who was queued).

    @contextlib.asynccontextmanager
    async def request(self) -> AsyncIterator[None]:
        """Hold one of the in-flight places for the length of a request."""
        while self.in_flight >= max(1, int(self.window)):
            if self._freed is None:
                self._freed = anyio.Event()
            await self._freed.wait()
        self.in_flight += 1
        try:
            await self.acquire()
            yield
        finally:
            self.in_flight -= 1
            if self._freed is not None:
                self._freed.set()
                self._freed = None

    def pause(self, seconds: float) -> None:
        """Hold every caller back for ``seconds`` (the API asked us to)."""
        resume = anyio.current_time() + min(seconds, MAX_RETRY_AFTER)
        self._resume_at = max(self._resume_at, resume)
        # No burst right after a pause: requests resume one interval apart.
        self._theoretical_arrival = max(self._theoretical_arrival, resume + self._tolerance)

    def paused_for(self) -> float:
        """Seconds until requests may leave again after a pause (0 when none holds them)."""
        return max(0.0, self._resume_at - anyio.current_time())

    def throttled(self) -> None:
        """A 429: halve what may be in flight (never below one)."""
        self.window = max(1.0, min(self.window, float(self.in_flight)) / 2)

    def succeeded(self) -> None:
        """A request that was not throttled: grow back by one per window's worth."""
        self.window = min(float(self.max_in_flight), self.window + 1 / self.window)

    def observe_quota(self, remaining: str | None, reset: str | None) -> None:
        """``X-RateLimit-Remaining``/``-Reset``, when the API sends them: an exhausted quota
        is a deadline like a Retry-After. Absent or unreadable headers change nothing."""
        if remaining is None or reset is None:
            return
        try:
            left, until = float(remaining), float(reset)
        except ValueError:
            return
        if left > 0 or not math.isfinite(until):
            return
        # Seconds until the reset, or (past a billion) the Unix time of the reset, in
        # seconds or (past a trillion) in milliseconds.
        if until > RESET_IS_EPOCH_MS:
            until = until / 1000 - time.time()
        elif until > RESET_IS_EPOCH:
            until -= time.time()
        self.pause(until)


class Backoff:
    """Exponential backoff with full jitter; a server's ``Retry-After`` wins when present."""

    def __init__(
        self,
        initial: float = DEFAULT_BACKOFF_INITIAL,
        maximum: float = DEFAULT_BACKOFF_MAX,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self.attempts = 0
        # Not a new random.Random() each: seeding one reads the OS's entropy and fills the
        # generator's state, and the delivery loop makes a Backoff for every batch.
        self._rng = rng or _JITTER

    def next_delay(self, retry_after: float | None = None) -> float:
        ceiling = min(self.maximum, self.initial * 2.0 ** min(self.attempts, 32))
        self.attempts += 1
        # Never below a tenth of the initial delay, even when told "Retry-After: 0":
        # zero-length retries would turn a run of failures into a burst.
        floor = self.initial / 10
        if retry_after is not None:
            return min(max(retry_after, floor), MAX_RETRY_AFTER)
        return max(floor, self._rng.uniform(0, ceiling))

    def reset(self) -> None:
        self.attempts = 0


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
