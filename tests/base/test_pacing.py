"""Backoff (full jitter, Retry-After, floor, reset) and the shared RateLimiter."""

from __future__ import annotations

import random
import time
from types import SimpleNamespace

import anyio
import pytest
from runflow_tail import pacing
from runflow_tail.pacing import MAX_RETRY_AFTER, Backoff, RateLimiter


class HighestDraw(random.Random):
    """Jitter that always draws the top of its range, exposing the ceiling."""

    def uniform(self, a: float, b: float) -> float:
        return b


class LowestDraw(random.Random):
    """Jitter that always draws the bottom of its range, exposing the floor."""

    def uniform(self, a: float, b: float) -> float:
        return a


class FakeClock:
    """anyio's clock and sleep for the limiter, where sleeping only moves time forward."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def current_time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    namespace = SimpleNamespace(current_time=fake.current_time, sleep=fake.sleep)
    monkeypatch.setattr(pacing, "anyio", namespace)
    return fake


# -- Backoff -------------------------------------------------------------------------------


def test_backoff_ceiling_doubles_up_to_the_maximum() -> None:
    """The jitter range's top doubles from initial on each attempt and stops at maximum."""
    backoff = Backoff(1.0, 32.0, rng=HighestDraw())
    assert [backoff.next_delay() for _ in range(8)] == [1, 2, 4, 8, 16, 32, 32, 32]


def test_backoff_delays_stay_within_floor_and_ceiling() -> None:
    """Every jittered delay lies in [initial/10, min(maximum, initial * 2**attempt)]."""
    rng = random.Random(1234)
    for attempt in range(12):
        for _ in range(200):
            backoff = Backoff(0.5, 10.0, rng=rng)
            backoff.attempts = attempt
            delay = backoff.next_delay()
            assert 0.05 <= delay <= min(10.0, 0.5 * 2**attempt)


def test_backoff_is_jittered_across_the_whole_range() -> None:
    """Full jitter spreads delays over the range instead of clustering at the ceiling."""
    rng = random.Random(99)
    delays = []
    for _ in range(500):
        backoff = Backoff(1.0, 32.0, rng=rng)
        backoff.attempts = 5
        delays.append(backoff.next_delay())
    assert min(delays) < 8 < 24 < max(delays)


def test_backoff_never_goes_below_its_floor() -> None:
    """Even a jitter draw of zero waits a tenth of the initial delay."""
    backoff = Backoff(2.0, 32.0, rng=LowestDraw())
    assert backoff.next_delay() == 0.2


def test_backoff_survives_many_attempts() -> None:
    """Thousands of attempts neither overflow nor exceed the maximum."""
    backoff = Backoff(1.0, 32.0, rng=HighestDraw())
    backoff.attempts = 10_000
    assert backoff.next_delay() == 32.0


def test_retry_after_wins_over_the_jitter() -> None:
    """A server's Retry-After is used as is, even above the backoff maximum."""
    backoff = Backoff(1.0, 32.0, rng=HighestDraw())
    assert backoff.next_delay(retry_after=50.0) == 50.0
    assert backoff.next_delay(retry_after=0.5) == 0.5


def test_retry_after_is_capped() -> None:
    """An absurd Retry-After is capped at MAX_RETRY_AFTER."""
    backoff = Backoff()
    assert backoff.next_delay(retry_after=10 * MAX_RETRY_AFTER) == MAX_RETRY_AFTER
    assert backoff.next_delay(retry_after=float("inf")) == MAX_RETRY_AFTER


def test_retry_after_zero_still_waits_the_floor() -> None:
    """Retry-After: 0 waits the floor, so a run of failures never becomes a burst."""
    backoff = Backoff(1.0, 32.0)
    assert backoff.next_delay(retry_after=0.0) == 0.1


def test_retry_after_counts_as_an_attempt() -> None:
    """A delay given by Retry-After still advances the exponential schedule."""
    backoff = Backoff(1.0, 32.0, rng=HighestDraw())
    backoff.next_delay(retry_after=5.0)
    backoff.next_delay(retry_after=5.0)
    assert backoff.next_delay() == 4.0


def test_reset_starts_over_at_initial() -> None:
    """After reset the next delay is drawn from [floor, initial] again."""
    backoff = Backoff(1.0, 32.0, rng=HighestDraw())
    for _ in range(6):
        backoff.next_delay()
    backoff.reset()
    assert backoff.attempts == 0
    assert backoff.next_delay() == 1.0


# -- RateLimiter: computed waits on a fake clock ------------------------------------------


@pytest.mark.anyio
async def test_limiter_first_request_goes_at_once(clock: FakeClock) -> None:
    """The first request does not wait."""
    await RateLimiter(2.0).acquire()
    assert clock.sleeps == []


@pytest.mark.anyio
async def test_limiter_spaces_requests_at_its_rate(clock: FakeClock) -> None:
    """Back-to-back requests are spaced 1/rate apart."""
    limiter = RateLimiter(4.0)
    for _ in range(4):
        await limiter.acquire()
    assert clock.sleeps == [0.25, 0.25, 0.25]
    assert clock.now == 1000.75


@pytest.mark.anyio
async def test_limiter_does_not_wait_after_idle_time(clock: FakeClock) -> None:
    """A request after a quiet period longer than the interval goes at once."""
    limiter = RateLimiter(4.0)
    await limiter.acquire()
    clock.now += 10
    await limiter.acquire()
    assert clock.sleeps == []


@pytest.mark.anyio
async def test_limiter_allows_its_burst_then_spaces(clock: FakeClock) -> None:
    """With burst=3, three requests go at once and the fourth waits one interval."""
    limiter = RateLimiter(10.0, burst=3)
    for _ in range(3):
        await limiter.acquire()
    assert clock.now == pytest.approx(1000.0)
    await limiter.acquire()
    assert clock.now == pytest.approx(1000.1)


@pytest.mark.anyio
async def test_pause_holds_the_next_request_back(clock: FakeClock) -> None:
    """After pause(s), the next request waits s seconds."""
    limiter = RateLimiter(100.0)
    limiter.pause(30.0)
    await limiter.acquire()
    assert clock.sleeps == [pytest.approx(30.0)]


@pytest.mark.anyio
async def test_pause_keeps_spacing_afterwards(clock: FakeClock) -> None:
    """Requests after a pause resume at the limiter's rate, not all at once."""
    limiter = RateLimiter(2.0)
    limiter.pause(5.0)
    await limiter.acquire()
    await limiter.acquire()
    assert clock.sleeps == [pytest.approx(5.0), pytest.approx(0.5)]


@pytest.mark.anyio
async def test_pause_with_burst_waits_the_full_pause(clock: FakeClock) -> None:
    """The burst allowance does not shorten a pause."""
    limiter = RateLimiter(10.0, burst=5)
    limiter.pause(3.0)
    await limiter.acquire()
    assert clock.sleeps == [pytest.approx(3.0)]


@pytest.mark.anyio
async def test_shorter_pause_does_not_cut_a_longer_one(clock: FakeClock) -> None:
    """A second, shorter pause never brings the resume time forward."""
    limiter = RateLimiter(100.0)
    limiter.pause(20.0)
    limiter.pause(1.0)
    await limiter.acquire()
    assert clock.sleeps == [pytest.approx(20.0)]


@pytest.mark.anyio
async def test_pause_is_capped(clock: FakeClock) -> None:
    """An absurd pause is capped at MAX_RETRY_AFTER."""
    limiter = RateLimiter(100.0)
    limiter.pause(1e9)
    await limiter.acquire()
    assert clock.sleeps == [pytest.approx(MAX_RETRY_AFTER)]


# -- RateLimiter: the real anyio clock -----------------------------------------------------

# asyncio may wake a timer up to its clock resolution early.
EARLY = 0.002


@pytest.mark.anyio
async def test_limiter_spacing_on_the_real_clock() -> None:
    """On anyio's clock, n back-to-back acquires take at least (n - 1) intervals."""
    limiter = RateLimiter(200.0)
    start = anyio.current_time()
    for _ in range(6):
        await limiter.acquire()
    assert anyio.current_time() - start >= 5 * 0.005 - EARLY


@pytest.mark.anyio
async def test_concurrent_callers_share_the_rate() -> None:
    """Streams acquiring concurrently from one limiter are spaced one interval apart."""
    limiter = RateLimiter(100.0)
    times: list[float] = []

    async def request() -> None:
        await limiter.acquire()
        times.append(anyio.current_time())

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(request)
    times.sort()
    assert times[-1] - times[0] >= 4 * 0.01 - EARLY


@pytest.mark.anyio
async def test_pause_on_the_real_clock() -> None:
    """After pause(0.05), the next acquire returns no sooner than 50 ms later."""
    limiter = RateLimiter(1000.0)
    await limiter.acquire()
    start = anyio.current_time()
    limiter.pause(0.05)
    await limiter.acquire()
    assert anyio.current_time() - start >= 0.05 - EARLY


@pytest.mark.anyio
async def test_a_caller_already_waiting_when_a_pause_comes_waits_for_the_deadline() -> None:
    """A request queued before a Retry-After arrives still does not leave before its end."""
    limiter = RateLimiter(10.0)
    await limiter.acquire()
    left: list[float] = []

    async def queued() -> None:
        await limiter.acquire()  # reserved for ~0.1 s from now, then the pause comes
        left.append(anyio.current_time())

    async with anyio.create_task_group() as tg:
        tg.start_soon(queued)
        # Until the queued caller has taken its place and sleeps on it.
        await anyio.wait_all_tasks_blocked()
        deadline = anyio.current_time() + 0.3
        limiter.pause(0.3)
    assert left[0] >= deadline - EARLY


@pytest.mark.anyio
async def test_a_429_halves_the_requests_in_flight_and_successes_grow_them_back() -> None:
    """After throttled(), request() admits half as many at once; successes add about one
    per window's worth, up to the maximum."""
    limiter = RateLimiter(1000.0, max_in_flight=8)
    entered = anyio.Event()
    release = anyio.Event()
    inside = 0

    async def hold() -> None:
        nonlocal inside
        async with limiter.request():
            inside += 1
            if inside == 8:
                entered.set()
            await release.wait()

    async with anyio.create_task_group() as tg:
        for _ in range(8):
            tg.start_soon(hold)
        await entered.wait()
        limiter.throttled()
        assert limiter.window == 4.0
        release.set()
    late: list[int] = []

    async def count() -> None:
        async with limiter.request():
            late.append(limiter.in_flight)
            await anyio.sleep(0.01)

    async with anyio.create_task_group() as tg:
        for _ in range(12):
            tg.start_soon(count)
    assert max(late) == 4
    for _ in range(100):
        limiter.succeeded()
    assert limiter.window == 8.0


@pytest.mark.anyio
async def test_an_exhausted_quota_is_a_deadline(clock: FakeClock) -> None:
    """X-RateLimit-Remaining: 0 with a reset in seconds (or as a Unix time) pauses until the
    reset; quota left, or headers missing or unreadable, change nothing."""
    limiter = RateLimiter(100.0)
    limiter.observe_quota("3", "10")
    limiter.observe_quota(None, "10")
    limiter.observe_quota("0", "soon")
    await limiter.acquire()
    assert clock.sleeps == []
    limiter.observe_quota("0", "2.5")
    await limiter.acquire()
    assert clock.sleeps == [pytest.approx(2.5)]


@pytest.mark.anyio
async def test_a_quota_reset_given_as_a_unix_time_waits_until_then() -> None:
    """X-RateLimit-Reset as Unix seconds or milliseconds means the same instant, not an
    hour's pause."""
    for reset in (time.time() + 0.05, (time.time() + 0.05) * 1000):
        limiter = RateLimiter(1000.0)
        started = anyio.current_time()
        limiter.observe_quota("0", f"{reset:.3f}")
        await limiter.acquire()
        assert 0.0 <= anyio.current_time() - started < 1.0


def test_limiter_says_how_long_a_pause_still_holds(clock: FakeClock) -> None:
    """What a poller reports as its next try: the pause the API imposed, as it runs down."""
    limiter = RateLimiter(4.0)
    assert limiter.paused_for() == 0.0
    limiter.pause(1.0)
    clock.now += 0.25
    assert limiter.paused_for() == pytest.approx(0.75)
    clock.now += 1.0
    assert limiter.paused_for() == 0.0
