"""deploy/ as an ops engineer reads it: the systemd install (a user a log shipper can share a
group with, the archive under LogsDirectory, a config readable by that group only, the key
written without a newline) and a reproducible image (exact base tag, pinned packages)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib

import pytest
from packaging.requirements import Requirement

from tests.support.harness import REPO

UNIT = REPO / "deploy" / "systemd" / "runflow-tail.service"
SYSUSERS = REPO / "deploy" / "systemd" / "runflow-tail.sysusers"
INSTALLED_CONFIG = REPO / "config" / "runflow-tail.toml"
DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
CONSTRAINTS = REPO / "deploy" / "constraints.txt"
README = REPO / "README.md"


def unit_settings() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def readme_block(containing: str) -> str:
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), re.S)
    (block,) = [block for block in blocks if containing in block]
    return block


def test_the_unit_runs_as_the_user_the_sysusers_file_creates() -> None:
    """User= and Group= name the sysusers file's user (no DynamicUser=, whose directories are
    private to the unit), and the logs directory is group-readable."""
    unit = unit_settings()
    (user_line,) = [line for line in SYSUSERS.read_text().splitlines() if line.startswith("u ")]
    user = user_line.split()[1]
    assert unit["User"] == [user] and unit["Group"] == [user]
    assert "DynamicUser" not in unit
    assert unit["LogsDirectory"] == ["runflow-tail"] and unit["LogsDirectoryMode"] == ["0750"]


def test_systemd_sysusers_accepts_the_user_definition() -> None:
    """`systemd-sysusers --dry-run` would create the user and group runflow-tail."""
    sysusers = shutil.which("systemd-sysusers")
    if sysusers is None:
        if os.environ.get("CI"):
            pytest.fail("CI must provide systemd-sysusers (see .ci/run)")
        pytest.skip("systemd-sysusers is not installed")
    result = subprocess.run(
        [sysusers, "--dry-run", str(SYSUSERS)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert "Creating group 'runflow-tail'" in result.stderr
    assert "Creating user 'runflow-tail'" in result.stderr


def test_the_installed_config_archives_under_the_logs_directory_and_prints_nothing() -> None:
    """The config the instructions install has no stdout sink (journald would get every
    entry) and writes its files under /var/log/runflow-tail (the unit's LogsDirectory)."""
    sinks = tomllib.loads(INSTALLED_CONFIG.read_text())["sinks"]
    assert sinks and all(sink["type"] != "stdout" for sink in sinks.values())
    files = [sink["path"] for sink in sinks.values() if sink["type"] == "file"]
    assert files and all(path.startswith("/var/log/runflow-tail/") for path in files)


@pytest.mark.parametrize("source", ["unit", "README"])
def test_the_instructions_install_the_config_0640_for_the_units_group(source: str) -> None:
    """Both the unit's comment and the README install the config 0640 with the unit's group
    (it may hold webhook URLs), its directory 0750, and write the key with printf (`<<<`
    would add a newline to it)."""
    text = UNIT.read_text() if source == "unit" else readme_block("systemctl enable")
    group = unit_settings()["Group"][0]
    assert f"install -d -m 0750 -g {group} /etc/runflow-tail" in text
    assert f"install -m 0640 -g {group} config/runflow-tail.toml /etc/runflow-tail/" in text
    assert "printf '%s' \"$RUNFLOW_API_KEY\" | sudo install -m 0600 /dev/stdin" in text
    assert not re.search(r"/dev/stdin.*<<<", text)
    assert "sudo python3 -m venv /opt/runflow-tail" in text
    assert "pip install -c deploy/constraints.txt ." in text


def test_the_image_builds_from_exact_tags_and_pinned_packages() -> None:
    """Every FROM names an exact version (no floating tag), and pip installs under
    PIP_CONSTRAINT = the repository's constraints file."""
    text = DOCKERFILE.read_text()
    bases = re.findall(r"^FROM (\S+)", text, re.M)
    assert bases and all(
        re.search(r":\d+\.\d+\.\d+-[\w-]+$|@sha256:[0-9a-f]{64}$", b) for b in bases
    )
    assert "COPY deploy/constraints.txt ./constraints.txt" in text
    assert "PIP_CONSTRAINT=/src/constraints.txt" in text


def test_the_constraints_pin_every_dependency_within_pyproject() -> None:
    """deploy/constraints.txt pins (==) each of pyproject's dependencies, the optional extras'
    (the image installs those its EXTRAS names), and setuptools for the build, to a version
    their requirements allow."""
    pins = dict(
        line.split("==")
        for line in CONSTRAINTS.read_text().splitlines()
        if line and not line.startswith("#")
    )
    pins = {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in pins.items()}
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    wanted = [Requirement(text) for text in project["project"]["dependencies"]]
    extras = project["project"]["optional-dependencies"]
    wanted += [
        Requirement(text)
        for name in ("otlp", "s3", "postgres")
        for text in extras[name]
        if not text.startswith("runflow-tail")
    ]
    wanted += [Requirement(text) for text in project["build-system"]["requires"]]
    for requirement in wanted:
        name = re.sub(r"[-_.]+", "-", requirement.name).lower()
        assert name in pins, f"{name} is not pinned"
        assert requirement.specifier.contains(pins[name]), (name, pins[name])


def test_the_compose_app_waits_for_a_documented_health_kind() -> None:
    """compose.yaml says which health service_healthy waits for, and how to wait for
    readiness instead (runflow-tail health)."""
    text = (REPO / "deploy" / "docker" / "compose.yaml").read_text()
    assert "condition: service_healthy" in text
    assert "liveness" in text and "readiness" in text
    assert '#   test: ["CMD", "runflow-tail", "health"]' in text


def test_the_healthcheck_needs_only_the_standard_library() -> None:
    """The image's liveness check imports nothing outside the standard library (it runs
    with -I -S, without runflow-tail's packages)."""
    source = (REPO / "deploy" / "docker" / "healthz.py").read_text()
    imported = set(re.findall(r"^import (\w+)", source, re.M))
    imported |= set(re.findall(r"^from (\w+)", source, re.M))
    assert imported <= {"http", "os", "sys"}, imported
