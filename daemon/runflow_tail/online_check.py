"""``check-config --online``: ask the API whether the key and each stream's query work."""

from __future__ import annotations

from .client import RunflowClient
from .errors import ApiError
from .settings import Settings


async def check_online(settings: Settings) -> list[str]:
    """One cheap request per stream; returns the problems found (empty when all is well)."""
    problems: list[str] = []
    client = RunflowClient(settings.api)
    try:
        try:
            await client.get_json("/v1/auth/me", what="checking the API key")
        except ApiError as exc:
            return [str(exc)]
        for stream in settings.streams:
            try:
                await client.fetch_logs(
                    stream.run_id, query=stream.query, fields=stream.fields, limit=1
                )
            except ApiError as exc:
                problems.append(f"stream {stream.name!r}: {exc}")
    finally:
        await client.aclose()
    return problems
