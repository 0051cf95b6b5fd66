"""The Kubernetes manifests, checked offline (no cluster here): every core object against the
Kubernetes API's own schemas (`kubernetes-validate`, strict: unknown fields are errors), and
what no schema sees — the settings they set exist, the names they cross-reference match, KEDA's
ScaledObject targets the worker Deployment and counts the queue our store keeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from superscale.settings import Settings

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="the dev extra has it")
MANIFEST = Path(__file__).resolve().parents[2] / "deploy/kubernetes/superscale.yaml"
KUBERNETES = "1.30.0"


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc]


def _by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def test_core_objects_match_the_kubernetes_schemas(objects: list[dict[str, Any]]) -> None:
    core = [o for o in objects if not o["apiVersion"].startswith("keda.sh/")]
    assert {o["kind"] for o in core} >= {
        "Namespace", "Secret", "ConfigMap", "Deployment", "Service", "Job",
        "PersistentVolumeClaim", "PodDisruptionBudget",
    }  # fmt: skip
    for obj in core:
        kubernetes_validate.validate(obj, KUBERNETES, strict=True)  # raises on any error


def test_a_broken_manifest_is_caught(objects: list[dict[str, Any]]) -> None:
    """The check can fail: a misspelt field in a Deployment is an error."""
    deployment = dict(_by_kind(objects, "Deployment")["superscale-api"])
    deployment["spec"] = {**deployment["spec"], "replica": 2}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)


def test_settings_and_names_line_up(objects: list[dict[str, Any]]) -> None:
    settings = {f"SUPERSCALE_{name.upper()}" for name in Settings.model_fields}
    config = _by_kind(objects, "ConfigMap")["superscale"]["data"]
    secret = _by_kind(objects, "Secret")["superscale"]["stringData"]
    for name in [*config, *secret]:
        assert name.startswith("AWS_") or name in settings, f"{name} is no setting"
    deployments = _by_kind(objects, "Deployment")
    service = _by_kind(objects, "Service")["superscale"]
    api = deployments["superscale-api"]["spec"]
    assert service["spec"]["selector"] == api["template"]["metadata"]["labels"]
    claims = set(_by_kind(objects, "PersistentVolumeClaim"))
    for deployment in deployments.values():
        pod = deployment["spec"]["template"]["spec"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= (
            deployment["spec"]["template"]["metadata"]["labels"].items()
        )
        for container in pod["containers"]:
            refs = {next(iter(r.values()))["name"] for r in container["envFrom"]}
            assert refs == {"superscale"}
        for volume in pod.get("volumes", []):
            assert volume["persistentVolumeClaim"]["claimName"] in claims
        # Longer than the server's own drain (SUPERSCALE_SHUTDOWN_GRACE), as SIGTERM needs.
        assert pod["terminationGracePeriodSeconds"] > int(config["SUPERSCALE_SHUTDOWN_GRACE"])
    worker = deployments["superscale-worker"]["spec"]["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert worker["args"][0] == "worker"


def test_workers_scale_on_the_queue_depth(objects: list[dict[str, Any]]) -> None:
    (scaled,) = _by_kind(objects, "ScaledObject").values()
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] in _by_kind(objects, "Deployment")
    assert spec["scaleTargetRef"]["name"] == "superscale-worker"
    assert 0 <= spec["minReplicaCount"] < spec["maxReplicaCount"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "postgresql"
    # The query counts what the job store calls queued (its own statement counts the same).
    assert trigger["metadata"]["query"] == "SELECT COUNT(*) FROM jobs WHERE state = 'IN_QUEUE'"
    assert int(trigger["metadata"]["targetQueryValue"]) > 0
    auth = _by_kind(objects, "TriggerAuthentication")[trigger["authenticationRef"]["name"]]
    (ref,) = auth["spec"]["secretTargetRef"]
    assert ref["parameter"] == "connection"
    assert ref["key"] in _by_kind(objects, "Secret")[ref["name"]]["stringData"]
