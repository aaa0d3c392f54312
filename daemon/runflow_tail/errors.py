"""Every error runflow-tail expects, as one tree.

::

    RunflowTailError                      base; str() is a message for a person
    ├── ConfigError                       bad config or command line       -> exit 2
    ├── StateError                        the state directory or database  -> exit 3
    │   ├── StateLocked                   another daemon holds the lock
    │   ├── JournalUnreadable             corrupt / unreadable journal file
    │   ├── StateUnavailable              PostgreSQL unreachable right now: retried
    │   └── LeaseLost                     a write refused: another member owns it now
    ├── ApiError                          the Runflow API said no or broke
    │   ├── RetryableApiError             back off and try again (retry_after wins)
    │   │   ├── ApiUnavailable            5xx
    │   │   ├── ApiRateLimited            429
    │   │   ├── ApiTransportError         timeout, refused, reset, dropped
    │   │   └── ApiMalformedResponse      a 200 whose body is not a page
    │   ├── ApiConfigurationError         400/401/402/403/404/422: a person must act
    │   │   └── ApiCursorRejected         400 about `pq`: invalid or expired cursor
    │   └── ApiCursorStuck                a page cursor that brings the same page back
    └── SinkError                         a destination failed
        ├── SinkRetryableError            try again later (retry_after wins)
        ├── SinkRejectedError             permanent: dead-letter the batch
        │   └── SinkPartiallyRejectedError  kept part, refused the rest for good
        └── SinkClosedError               the reader went away (`| head`): stop cleanly

Each boundary translates what it catches into this tree with ``raise ... from exc``;
``api.errors.classify_api_response`` is the one place that decides what an API answer
means, and ``sinks._http`` the one that decides it for the HTTP sinks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_STATE = 3
EXIT_API = 4


class RunflowTailError(Exception):
    """Base of every expected error; its message is written for the person reading it."""

    exit_code = EXIT_FAILURE


class ConfigError(RunflowTailError):
    """The configuration or command line is invalid; ``problems`` lists every one."""

    exit_code = EXIT_CONFIG

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class StateError(RunflowTailError):
    exit_code = EXIT_STATE


class StateLocked(StateError):
    pass


class JournalUnreadable(StateError):
    pass


class StateUnavailable(StateError):
    """The state database cannot be reached right now (down, restarting, partitioned);
    callers pause and try again with backoff."""


class LeaseLost(StateError):
    """A write for a stream, sink or the alert engine was refused: this daemon no longer
    holds its lease (another member may own it now). ``by_database`` tells whether the
    database's epoch check refused it or this daemon knew before asking."""

    def __init__(self, message: str, *, lease: str, by_database: bool) -> None:
        self.lease = lease
        self.by_database = by_database
        super().__init__(message)


class ApiError(RunflowTailError):
    """A failed API call: the HTTP status (0 without a response) and what the API said."""

    exit_code = EXIT_API

    def __init__(
        self,
        summary: str,
        *,
        status: int = 0,
        code: str | None = None,
        api_message: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.api_message = api_message
        self.retry_after = retry_after
        super().__init__(summary)


class RetryableApiError(ApiError):
    pass


class ApiUnavailable(RetryableApiError):
    pass


class ApiRateLimited(RetryableApiError):
    pass


class ApiTransportError(RetryableApiError):
    pass


class ApiMalformedResponse(RetryableApiError):
    pass


class ApiConfigurationError(ApiError):
    """The request cannot succeed until a person changes something."""


class ApiCursorRejected(ApiConfigurationError):
    """The API refused a page cursor; the poller recovers by seeking from its watermark."""


class ApiCursorStuck(ApiError):
    """The API answered a page cursor with the same cursor (or the same entries): following
    it would never end. The poller stops, says so, and seeks again from its watermark."""

    def __init__(self, summary: str, *, cursor: str) -> None:
        self.cursor = cursor
        super().__init__(summary, status=200)


class SinkError(RunflowTailError):
    pass


class SinkRetryableError(SinkError):
    def __init__(self, reason: str, *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(reason)


class SinkRejectedError(SinkError):
    """The destination refused the batch for good; ``status`` is its HTTP status when it
    answered one (0 otherwise), for a sink that explains some refusals better."""

    def __init__(self, reason: str, *, status: int = 0) -> None:
        self.status = status
        super().__init__(reason)


class SinkPartiallyRejectedError(SinkRejectedError):
    """The destination kept part of the batch and refused the rest for good.

    ``rejected`` are the entries to dead-letter (the whole batch when the destination
    only says how many it refused, as OTLP's ``partial_success`` does); ``accepted`` is
    how many entries it kept. Raised only once nothing in the batch is worth retrying.
    """

    def __init__(self, reason: str, *, rejected: Sequence[Any], accepted: int) -> None:
        self.rejected = tuple(rejected)
        self.accepted = accepted
        super().__init__(reason)


class SinkClosedError(SinkError):
    """The destination is gone for good (a closed stdout pipe): stop cleanly."""
