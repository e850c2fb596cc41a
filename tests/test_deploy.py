"""Deployment files: Kubernetes manifests against the API schemas, offline."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest
import yaml

from helpers import REPO_ROOT

MANIFESTS = sorted((REPO_ROOT / "deploy" / "kubernetes").glob("*.yaml"))
KUBERNETES_VERSION = "1.30"


def documents() -> list[tuple[str, dict]]:
    docs = []
    for path in MANIFESTS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((f"{path.name}:{doc['kind']}", doc))
    return docs


def test_the_expected_objects_are_there() -> None:
    kinds = {doc["kind"] for _, doc in documents()}
    assert {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "ConfigMap"} <= kinds


@pytest.mark.parametrize("name,doc", documents(), ids=[name for name, _ in documents()])
def test_manifest_validates_against_the_kubernetes_schema(name: str, doc: dict) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_deployments_probe_ready_and_health_and_outlast_the_drain() -> None:
    for name, doc in documents():
        if doc["kind"] != "Deployment":
            continue
        pod = doc["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
        assert container["livenessProbe"]["httpGet"]["path"] == "/health"
        assert container["startupProbe"]["httpGet"]["path"] == "/ready"
        drain = float(container["args"][container["args"].index("--graceful-timeout") + 1])
        pre_stop = float(container["lifecycle"]["preStop"]["exec"]["command"][-1])
        assert pod["terminationGracePeriodSeconds"] > drain + pre_stop, name


def test_every_flag_in_the_manifests_and_dockerfiles_exists() -> None:
    from inferserve.__main__ import build_parser

    known = {opt for action in build_parser()._actions for opt in action.option_strings}
    used: set[str] = set()
    for _, doc in documents():
        if doc["kind"] == "Deployment":
            used |= {a for a in doc["spec"]["template"]["spec"]["containers"][0]["args"] if a.startswith("--")}
    for dockerfile in ("Dockerfile", "Dockerfile.cuda"):
        for line in (REPO_ROOT / dockerfile).read_text().splitlines():
            if line.startswith(("ENTRYPOINT ", "CMD ")):
                used |= {a for a in json.loads(line.split(" ", 1)[1]) if a.startswith("--")}
    assert used and used <= known, used - known
