"""How fast we may go: the shared request rate limiter and retry backoff.

Both are tiny on purpose; scheduling (when to actually sleep) stays with the callers
(the poller and the delivery loop), so each retry decision is made in one place.
"""

from __future__ import annotations

import email.utils
import random
import time

import anyio

DEFAULT_BACKOFF_INITIAL = 1.0
DEFAULT_BACKOFF_MAX = 32.0
MAX_RETRY_AFTER = 3600.0


class RateLimiter:
    """Spaces requests at ``rate`` per second with a small burst (GCRA), shared by all streams
    that use one API key. A 429 pauses everyone, because the API's limit is per organization.
    """

    def __init__(self, rate: float, *, burst: int = 1) -> None:
        self._interval = 1.0 / rate
        self._tolerance = max(0, burst - 1) * self._interval
        self._theoretical_arrival = 0.0

    async def acquire(self) -> None:
        now = anyio.current_time()
        self._theoretical_arrival = max(self._theoretical_arrival, now)
        wait = self._theoretical_arrival - now - self._tolerance
        self._theoretical_arrival += self._interval
        if wait > 0:
            await anyio.sleep(wait)

    def pause(self, seconds: float) -> None:
        """Hold every caller back for ``seconds`` (the API asked us to)."""
        resume = anyio.current_time() + min(seconds, MAX_RETRY_AFTER)
        self._theoretical_arrival = max(self._theoretical_arrival, resume + self._tolerance)


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
        self._rng = rng or random.Random()

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
