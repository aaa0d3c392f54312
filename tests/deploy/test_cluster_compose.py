"""deploy/docker/cluster.yaml: PostgreSQL and three daemons sharing it, configured by
environment variables that the configuration loader accepts as they are."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from runflow_tail.config.load import load_settings

COMPOSE = Path(__file__).resolve().parents[2] / "deploy" / "docker" / "cluster.yaml"
VALUES = {
    "RUNFLOW_API_KEY": "rf_test_key_0123456789",
    "PGPASSWORD": "not-a-real-password",
    "WEBHOOK_URL": "https://hooks.example.com/runflow",
}


def services() -> dict[str, Any]:
    text = re.sub(r"\$\{(\w+):\?[^}]*\}", lambda m: VALUES[m[1]], COMPOSE.read_text())
    document: dict[str, Any] = yaml.safe_load(text)
    return dict(document["services"])


def test_three_daemons_share_one_database_under_their_own_names() -> None:
    found = services()
    daemons = {name: service for name, service in found.items() if name.startswith("tail-")}
    assert len(daemons) == 3
    members = {service["environment"]["RUNFLOW_TAIL_STATE__MEMBER"] for service in daemons.values()}
    assert members == set(daemons)
    for service in daemons.values():
        assert service["build"]["args"]["EXTRAS"] == "postgres"
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert service["environment"]["PGHOST"] == "postgres"
    assert "healthcheck" in found["postgres"]


def test_each_daemons_environment_is_a_valid_configuration() -> None:
    for name, service in services().items():
        if not name.startswith("tail-"):
            continue
        environ = {key: str(value) for key, value in service["environment"].items()}
        settings = load_settings(config_file=None, environ=environ)
        assert settings.state.backend == "postgres"
        assert settings.state.member == name
        assert settings.state.lease_ttl == 15.0
        assert settings.sinks["hook"].type == "webhook"
