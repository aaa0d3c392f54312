"""deploy/kubernetes/: valid against the Kubernetes schemas (kubernetes-validate bundles
them, so this runs offline) and shaped as the README promises."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import ValidationError
from runflow_tail.config.load import load_settings

from tests.support.harness import REPO

MANIFESTS = sorted((REPO / "deploy" / "kubernetes").glob("*.yaml"))
KUBERNETES_VERSIONS = ("1.29", "1.37")


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def sidecar_pod() -> dict[str, Any]:
    (deployment,) = [
        doc for path in MANIFESTS for doc in documents(path) if doc["kind"] == "Deployment"
    ]
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda path: path.name)
def test_manifests_validate_strictly_against_the_kubernetes_schemas(
    path: Path, version: str
) -> None:
    """Every document is valid, with no unknown field, for an older and the newest version."""
    for document in documents(path):
        kubernetes_validate.validate(document, version, strict=True)


def test_the_check_catches_a_wrong_field() -> None:
    """A port given as text is refused (so the check above can fail)."""
    document = documents(MANIFESTS[0])[-1]
    document["spec"]["template"]["spec"]["containers"][1]["ports"][0]["containerPort"] = "9464"
    with pytest.raises(ValidationError):
        kubernetes_validate.validate(document, KUBERNETES_VERSIONS[-1], strict=True)


def test_the_sidecar_is_non_root_read_only_and_probed() -> None:
    """runflow-tail runs as non-root with a read-only root filesystem, no privilege
    escalation, liveness on /healthz, readiness on /readyz and resource requests."""
    pod = sidecar_pod()
    assert pod["securityContext"]["runAsNonRoot"] is True
    (sidecar,) = [c for c in pod["containers"] if c["name"] == "runflow-tail"]
    security = sidecar["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"cpu", "memory"} <= set(sidecar["resources"]["requests"])
    assert len(pod["containers"]) == 2


def test_the_key_is_a_file_from_a_secret_and_the_state_a_claim(tmp_path: Path) -> None:
    """The API key is mounted from the Secret (no environment variable holds it), the state
    directory is a PersistentVolumeClaim, and the ConfigMap's config validates and reads
    the key from that file."""
    pod = sidecar_pod()
    (sidecar,) = [c for c in pod["containers"] if c["name"] == "runflow-tail"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in sidecar["volumeMounts"]}
    assert "secret" in volumes[mounts["/run/secrets/runflow-tail"]]
    assert "persistentVolumeClaim" in volumes[mounts["/var/lib/runflow-tail"]]
    assert "env" not in sidecar
    (config_map,) = [
        doc for path in MANIFESTS for doc in documents(path) if doc["kind"] == "ConfigMap"
    ]
    text = config_map["data"]["runflow-tail.toml"]
    key_path = "/run/secrets/runflow-tail/api_key"
    assert f'api_key_file = "{key_path}"' in text
    (tmp_path / "api_key").write_text("rf_test_key\n")
    config = tmp_path / "runflow-tail.toml"
    config.write_text(text.replace(key_path, str(tmp_path / "api_key")))
    settings = load_settings(config_file=config, environ={})
    assert settings.api.api_key is not None
    assert settings.server.listen == "0.0.0.0:9464"
