"""Every secret a configuration holds, for the one redaction mechanism (``observability``).

Found by walking the settings, so a new sink type (a plugin too) is covered as soon as it
types its secrets ``SecretStr``: the API key, bearer tokens, basic passwords (and the
``user:password`` pair as an echoed Authorization header shows it), header values, signing
secrets, chat webhook URLs (a URL that *is* a token), routing keys, cloud credentials; and
the credentials and query values of every URL (``base_url``, a webhook's ``url``), which
may carry a token without being typed as a secret.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pydantic import AnyUrl, BaseModel, SecretStr

from runflow_tail.config.model import Settings


def secret_values(settings: Settings) -> set[str]:
    found: set[str] = set()
    _collect(settings, found)
    return {value for value in found if value}


def _collect(node: Any, found: set[str]) -> None:
    if isinstance(node, SecretStr):
        found.add(node.get_secret_value())
    elif isinstance(node, AnyUrl):
        found.update(url_credentials(str(node)))
    elif isinstance(node, str):
        if node.startswith(("http://", "https://")):
            found.update(url_credentials(node))
    elif isinstance(node, BaseModel):
        extra = getattr(node, "secret_values", None)
        if callable(extra):
            found.update(value for value in extra() if isinstance(value, str))
        for name in type(node).model_fields:
            _collect(getattr(node, name), found)
    elif isinstance(node, dict):
        for value in node.values():
            _collect(value, found)
    elif isinstance(node, list | tuple | set | frozenset):
        for value in node:
            _collect(value, found)


def url_credentials(url: str) -> list[str]:
    """A URL's password and query values: what in it may be a token."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return []
    return [value for value in (password, *(v for _, v in parse_qsl(parts.query))) if value]
