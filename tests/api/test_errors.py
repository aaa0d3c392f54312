"""The error tree's pure parts: classify_api_response, parse_error_body, parse_retry_after."""

from __future__ import annotations

import email.utils
from typing import Any

import httpx
import pytest
from runflow_tail.api.errors import classify_api_response, parse_error_body
from runflow_tail.errors import (
    EXIT_API,
    EXIT_CONFIG,
    EXIT_STATE,
    ApiConfigurationError,
    ApiCursorRejected,
    ApiError,
    ApiRateLimited,
    ApiUnavailable,
    ConfigError,
    JournalUnreadable,
    RetryableApiError,
    StateLocked,
)
from runflow_tail.pacing import parse_retry_after

WHAT = "fetching logs of run any"
NOW = 1_700_000_000.0


def classify(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> ApiError:
    return classify_api_response(status, headers or {}, body, what=WHAT)


# -- classify_api_response ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, ApiConfigurationError),
        (401, ApiConfigurationError),
        (402, ApiConfigurationError),
        (403, ApiConfigurationError),
        (404, ApiConfigurationError),
        (422, ApiConfigurationError),
        (418, ApiConfigurationError),
        (408, ApiUnavailable),
        (409, ApiUnavailable),
        (425, ApiUnavailable),
        (429, ApiRateLimited),
        (500, ApiUnavailable),
        (502, ApiUnavailable),
        (503, ApiUnavailable),
        (504, ApiUnavailable),
        (599, ApiUnavailable),
    ],
)
def test_status_maps_to_its_error_class(status: int, expected: type[ApiError]) -> None:
    """Each HTTP status lands on exactly one class of the error tree."""
    error = classify(status)
    assert type(error) is expected
    assert error.status == status


@pytest.mark.parametrize("status", [408, 409, 425, 429, 500, 503])
def test_transient_statuses_are_retryable(status: int) -> None:
    """Rate limits, 5xx and the transient 4xx statuses are RetryableApiError."""
    assert isinstance(classify(status), RetryableApiError)


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 422])
def test_configuration_statuses_are_not_retryable(status: int) -> None:
    """The statuses a person must act on are never RetryableApiError."""
    assert not isinstance(classify(status), RetryableApiError)


@pytest.mark.parametrize(
    "body",
    [
        b'{"code": "INVALID_CURSOR", "message": "malformed"}',
        b'{"code": "CURSOR_EXPIRED"}',
        b'{"code": "invalid_cursor"}',
        b'{"code": "INVALID_PQ"}',
        b'{"code": "INVALID_PAGE_TOKEN"}',
        b'{"code": "BAD_REQUEST", "message": "Invalid page token"}',
        b'{"code": "BAD_REQUEST", "message": "pq: expired"}',
        b'{"error": {"code": "BAD_REQUEST", "message": "The Cursor has expired"}}',
        b"invalid cursor",
    ],
)
def test_400_about_the_cursor_is_cursor_rejected(body: bytes) -> None:
    """A 400 whose code or message is about the cursor (any case) is ApiCursorRejected."""
    error = classify(400, body)
    assert type(error) is ApiCursorRejected
    assert isinstance(error, ApiConfigurationError)


@pytest.mark.parametrize(
    "body",
    [
        b'{"code": "INVALID_FILTER", "message": "unexpected token at 7"}',
        b'{"code": "BAD_REQUEST", "message": "unknown field pqr"}',
        b'{"code": "BAD_REQUEST", "message": "limit must be <= 500"}',
        b"",
    ],
)
def test_400_not_about_the_cursor_is_a_configuration_error(body: bytes) -> None:
    """A 400 about anything but the cursor is a plain ApiConfigurationError."""
    assert type(classify(400, body)) is ApiConfigurationError


@pytest.mark.parametrize(
    ("status", "body"),
    [(401, b'{"code": "UNAUTHORIZED"}'), (404, b'{"code": "INVALID_CURSOR"}')],
)
def test_cursor_wording_outside_400_is_not_cursor_rejected(status: int, body: bytes) -> None:
    """Only a 400 can reject a cursor; other statuses keep their own meaning."""
    assert type(classify(status, body)) is ApiConfigurationError


@pytest.mark.parametrize(
    ("status", "advice"),
    [
        (400, "query"),
        (401, "RUNFLOW_API_KEY"),
        (402, "credit"),
        (403, "runs:read"),
        (404, "run_id"),
        (422, "page_size"),
        (418, "check the configuration"),
    ],
)
def test_configuration_errors_say_what_to_change(status: int, advice: str) -> None:
    """Each configuration error's message names what a person should change."""
    assert advice in str(classify(status))


def test_message_names_the_call_status_code_and_api_message() -> None:
    """The summary says what was being done, the status, the API's code and its message."""
    error = classify(403, b'{"code": "PERMISSION_DENIED", "message": "no runs:read scope"}')
    assert str(error).startswith(WHAT)
    assert "HTTP 403" in str(error)
    assert "PERMISSION_DENIED: no runs:read scope" in str(error)
    assert (error.code, error.api_message) == ("PERMISSION_DENIED", "no runs:read scope")


def test_message_without_a_body_names_the_status() -> None:
    """An empty body still produces a readable message with the status."""
    error = classify(503)
    assert str(error) == f"{WHAT}: the API answered HTTP 503 (503)"
    assert (error.code, error.api_message) == (None, None)


@pytest.mark.parametrize(
    "headers",
    [{"retry-after": "9"}, {"Retry-After": "9"}, {"RETRY-AFTER": "9"}],
)
def test_retry_after_header_name_is_case_insensitive(headers: dict[str, str]) -> None:
    """Retry-After is found however a plain mapping spells the header name."""
    assert classify(429, headers=headers).retry_after == 9.0


def test_retry_after_is_read_from_httpx_headers() -> None:
    """httpx.Headers (what the client passes) give their Retry-After too."""
    headers = httpx.Headers({"Retry-After": "4"})
    assert classify_api_response(429, headers, b"", what=WHAT).retry_after == 4.0


@pytest.mark.parametrize("status", [429, 500, 503])
def test_retryable_errors_carry_retry_after(status: int) -> None:
    """429 and 5xx carry the server's Retry-After."""
    assert classify(status, headers={"Retry-After": "2.5"}).retry_after == 2.5


def test_configuration_errors_ignore_retry_after() -> None:
    """A configuration error has no retry_after: waiting does not fix it."""
    assert classify(401, headers={"Retry-After": "2"}).retry_after is None


def test_rate_limited_without_header_has_no_retry_after() -> None:
    """A 429 without Retry-After leaves the delay to the caller's backoff."""
    assert classify(429).retry_after is None


# -- parse_error_body ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            b'{"code": "UNAUTHORIZED", "message": "bad key", "errors": null}',
            ("UNAUTHORIZED", "bad key"),
        ),
        (b'{"code": "RATE_LIMITED"}', ("RATE_LIMITED", None)),
        (b'{"message": "only a message"}', (None, "only a message")),
        (
            b'{"error": {"code": "PERMISSION_DENIED", "message": "nope"}}',
            ("PERMISSION_DENIED", "nope"),
        ),
        (b'{"error": {"message": "nested message only"}}', (None, "nested message only")),
        (b'{"error": null, "code": "X", "message": "flat wins"}', ("X", "flat wins")),
        (b'{"error": {}, "code": "X", "message": "flat wins"}', ("X", "flat wins")),
        (b'{"code": "X", "message": "m", "extra": [1, 2]}', ("X", "m")),
    ],
)
def test_envelopes_give_code_and_message(body: bytes, expected: tuple[Any, Any]) -> None:
    """Both the flat and the nested envelope yield the API's code and message."""
    assert parse_error_body(body) == expected


@pytest.mark.parametrize(
    ("errors", "details"),
    [
        ('[{"loc": ["query", "limit"], "msg": "too big"}]', "query.limit: too big"),
        ('[{"field": "q", "message": "bad"}]', "q: bad"),
        ('[{"loc": "fields", "msg": "unknown"}]', "fields: unknown"),
        ('["plain string detail"]', "plain string detail"),
        ('[{"msg": "no location"}]', "no location"),
    ],
)
def test_field_errors_are_appended_to_the_message(errors: str, details: str) -> None:
    """Each shape of errors[] detail is described after the message."""
    body = f'{{"code": "VALIDATION_ERROR", "message": "invalid", "errors": {errors}}}'.encode()
    assert parse_error_body(body) == ("VALIDATION_ERROR", f"invalid ({details})")


def test_only_the_first_five_field_errors_are_listed() -> None:
    """A long errors[] list is cut to its first five details."""
    items = ",".join(f'{{"field": "f{i}", "message": "m"}}' for i in range(8))
    _, message = parse_error_body(f'{{"code": "V", "errors": [{items}]}}'.encode())
    assert message == "validation failed (f0: m; f1: m; f2: m; f3: m; f4: m)"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"502 Bad Gateway", "502 Bad Gateway"),
        (b"  <html>upstream timed out</html>\n", "<html>upstream timed out</html>"),
        (b'{"detail": "not our envelope"}', '{"detail": "not our envelope"}'),
        (b'{"error": "a string, not an object"}', '{"error": "a string, not an object"}'),
        (b'["a", "list"]', '["a", "list"]'),
        (b'{"code": 401, "message": "numeric code"}', '{"code": 401, "message": "numeric code"}'),
        (b"caf\xe9", "caf\ufffd"),
    ],
)
def test_other_bodies_become_the_message_text(body: bytes, expected: str) -> None:
    """A body in neither envelope is kept as text (decoded leniently, stripped)."""
    assert parse_error_body(body) == (None, expected)


@pytest.mark.parametrize("body", [b"", b"   \n\t"])
def test_empty_body_gives_nothing(body: bytes) -> None:
    """An empty or blank body yields neither code nor message."""
    assert parse_error_body(body) == (None, None)


def test_long_text_body_is_cut_to_200_characters() -> None:
    """A long proxy page is cut so that it cannot flood the log."""
    _, message = parse_error_body(b"x" * 5000)
    assert message == "x" * 200


# -- parse_retry_after ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("0", 0.0),
        ("7", 7.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("soon", None),
        ("7 seconds", None),
    ],
)
def test_retry_after_seconds(value: str | None, expected: float | None) -> None:
    """Delta-seconds are read as a non-negative float; nonsense gives None."""
    assert parse_retry_after(value, now=NOW) == expected


def test_retry_after_http_date_in_the_future() -> None:
    """An HTTP date gives the seconds from now until then."""
    value = email.utils.formatdate(NOW + 30, usegmt=True)
    assert parse_retry_after(value, now=NOW) == pytest.approx(30.0)


def test_retry_after_http_date_in_the_past_is_zero() -> None:
    """An HTTP date already past means retry now, never a negative delay."""
    value = email.utils.formatdate(NOW - 300, usegmt=True)
    assert parse_retry_after(value, now=NOW) == 0.0


def test_retry_after_rfc_850_date() -> None:
    """The obsolete RFC 850 date form is understood too."""
    assert parse_retry_after("Tuesday, 14-Nov-23 22:13:20 GMT", now=NOW - 10) == pytest.approx(10.0)


# -- the tree ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "exit_code"),
    [
        (ConfigError("bad"), EXIT_CONFIG),
        (StateLocked("locked"), EXIT_STATE),
        (JournalUnreadable("corrupt"), EXIT_STATE),
        (ApiUnavailable("down"), EXIT_API),
    ],
)
def test_exit_codes_follow_the_tree(error: Exception, exit_code: int) -> None:
    """Each branch of the tree carries the documented process exit code."""
    assert getattr(error, "exit_code", None) == exit_code


def test_config_error_lists_every_problem() -> None:
    """ConfigError keeps each problem and prints one per line."""
    error = ConfigError(["a is wrong", "b is wrong"])
    assert error.problems == ["a is wrong", "b is wrong"]
    assert str(error) == "a is wrong\nb is wrong"
