"""Command-line flags for every sandbox option, generated from SandboxOptions.

Generating them keeps "every option has a flag with help text" true as options are added;
pydantic then validates the strings exactly as it validates PATCH /_sandbox/options.
"""

from __future__ import annotations

import argparse
import re
import types
import typing
from typing import Any, Literal, get_args, get_origin

from runflow_tail.sandbox.options import SandboxOptions

# Short names for the flags people type most; every other option is --option-name.
CLI_FLAGS: dict[str, str] = {
    "world_rate": "--rate",
    "world_seed": "--seed",
    "reject_timestamp_range": "--reject-range",
}
# A person starting the sandbox by hand wants a world that lives; tests want it quiet.
CLI_DEFAULTS: dict[str, Any] = {"world_rate": 1.0}
_DEST_PREFIX = "sandbox_"
_NONE_WORDS = frozenset({"none", "null", ""})


def flag_for(name: str) -> str:
    return CLI_FLAGS.get(name, "--" + name.replace("_", "-"))


def add_sandbox_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per SandboxOptions field (``--api-key``, ``--rate``, ``--cursor-form``...)."""
    group = parser.add_argument_group("sandbox", "How the simulated Runflow API behaves.")
    for name, info in SandboxOptions.model_fields.items():
        default = CLI_DEFAULTS.get(name, info.get_default(call_default_factory=True))
        help_text = f"{_for_the_command_line(info.description or '')} (default: {_shown(default)})"
        dest = _DEST_PREFIX + name
        annotation = info.annotation
        if annotation is bool:
            group.add_argument(
                flag_for(name),
                dest=dest,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
            continue
        choices = _literal_choices(annotation)
        if choices is not None and _has_non_literal(annotation):
            choices = None  # e.g. retry_after: a number or 'date'; pydantic checks it
        optional = _allows_none(annotation)
        group.add_argument(
            flag_for(name),
            dest=dest,
            default=argparse.SUPPRESS,
            type=_list_of_ints if _is_int_list(annotation) else _text(optional),
            choices=choices,
            metavar=None if choices else name.upper(),
            help=help_text,
        )


def options_from_arguments(args: argparse.Namespace) -> SandboxOptions:
    """SandboxOptions from parsed flags (raises pydantic.ValidationError on bad values)."""
    given = {
        name: getattr(args, _DEST_PREFIX + name)
        for name in SandboxOptions.model_fields
        if hasattr(args, _DEST_PREFIX + name)
    }
    return SandboxOptions.model_validate({**CLI_DEFAULTS, **given})


def _for_the_command_line(description: str) -> str:
    """The option's description (written for PATCH /_sandbox/options) in the words a flag
    takes: ``none`` where the JSON says None, ``--no-...`` being off."""
    text = re.sub(r"\bNone\b", "'none'", description)
    return re.sub(r"\bFalse\b", "off", text)


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return "none" if value is None else str(value)


def _members(annotation: Any) -> tuple[Any, ...]:
    if get_origin(annotation) in (typing.Union, types.UnionType):
        return get_args(annotation)
    return (annotation,)


def _allows_none(annotation: Any) -> bool:
    return type(None) in _members(annotation)


def _literal_choices(annotation: Any) -> list[str] | None:
    choices = [
        str(value)
        for member in _members(annotation)
        if get_origin(member) is Literal
        for value in get_args(member)
    ]
    return choices or None


def _has_non_literal(annotation: Any) -> bool:
    return any(
        get_origin(member) is not Literal and member is not type(None)
        for member in _members(annotation)
    )


def _is_int_list(annotation: Any) -> bool:
    return get_origin(annotation) is list


def _text(optional: bool) -> Any:
    def convert(value: str) -> str | None:
        return None if optional and value.strip().lower() in _NONE_WORDS else value

    return convert


def _list_of_ints(value: str) -> list[int]:
    try:
        return [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {value!r}"
        ) from None
