"""README.md and `--help` describe the same command line: every flag the README uses with a
command is one that command takes, and every flag a command takes is in the README."""

from __future__ import annotations

import argparse
import re

import pytest
from runflow_tail.cli import build_parser
from runflow_tail.cli.demo import NEXT_STEPS

from tests.support.harness import REPO

README = (REPO / "README.md").read_text()
STOP_TOKENS = {"|", "||", "&&", ";", "&", ">", ">>", "2>", "<"}
FLAG = re.compile(r"^-{1,2}[A-Za-z][\w-]*")


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    """Every command and subcommand by its words: "tail", "checkpoint show", ..."""
    found: dict[str, argparse.ArgumentParser] = {}
    stack: list[tuple[str, argparse.ArgumentParser]] = [("", build_parser())]
    while stack:
        words, parser = stack.pop()
        found[words] = parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    stack.append((f"{words} {name}".strip(), child))
    return found


PARSERS = command_parsers()


def flags_of(words: str) -> set[str]:
    """The option strings of a command, or of all its subcommands for a group."""
    names = [name for name in PARSERS if name == words or name.startswith(f"{words} ")]
    return {
        option
        for name in names
        for action in PARSERS[name]._actions
        for option in action.option_strings
    }


def readme_code() -> list[str]:
    """Each logical line of the README's shell blocks, and each inline code span."""
    pieces: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", README, re.S):
        pieces += block.replace("\\\n", " ").splitlines()
    prose = re.sub(r"```.*?```", "", README, flags=re.S)
    pieces += re.findall(r"`([^`\n]+)`", prose)
    return pieces


def uses() -> list[tuple[str, str, str]]:
    """(command words, flag, the code it came from) for each `runflow-tail ...` in the README."""
    found = []
    for code in readme_code():
        for match in re.finditer(r"(?:^|(?<=[\s($]))runflow-tail(?= )", code):
            tokens = code[match.end() :].replace("\\|", " ").split()
            words: list[str] = []
            while tokens and " ".join([*words, tokens[0]]) in PARSERS:
                words.append(tokens.pop(0))
            if not words:
                continue  # an argument (`journalctl -u runflow-tail`) or prose, not a command
            for token in tokens:
                if token in STOP_TOKENS or token.startswith(("#", "$(")):
                    break
                flag = FLAG.match(token.strip("[]()"))
                if flag:
                    found.append((" ".join(words), flag.group(0), code))
    return found


USES = uses()


def test_the_readme_shows_many_commands_with_flags() -> None:
    """The extraction finds the README's command lines (so the next test means something)."""
    assert len(USES) > 60
    assert {words for words, _, _ in USES} >= {"tail", "run", "check-config", "replay"}


@pytest.mark.parametrize(("words", "flag", "code"), USES, ids=lambda value: str(value)[:60])
def test_every_flag_the_readme_uses_exists_in_that_commands_help(
    words: str, flag: str, code: str
) -> None:
    """A flag written after `runflow-tail COMMAND` in the README is one COMMAND accepts."""
    assert flag in flags_of(words), f"`runflow-tail {words}` has no {flag}: {code}"


@pytest.mark.parametrize("words", sorted(name for name in PARSERS if name), ids=str)
def test_every_flag_in_help_is_in_the_readme(words: str) -> None:
    """Each option a command's --help lists is written somewhere in the README."""
    parser = PARSERS[words]
    missing = [
        option
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction)
        for option in action.option_strings
        if option not in ("-h", "--help")
        and not re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", README)
    ]
    assert not missing, f"runflow-tail {words}: {missing} not in README.md"


def test_the_demos_hints_are_readme_commands() -> None:
    """Each command the demo suggests at its end is written, as is, in the README."""
    for line in NEXT_STEPS.splitlines():
        command = line.split("  #")[0].strip()
        assert command in README, command
