"""deploy/k8s: every manifest valid against the Kubernetes schemas (kubernetes-validate, strict),
the KEDA objects against a hand-written schema of the fields we use, and wired together."""

from __future__ import annotations

import json

import jsonschema
import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml

from tests.deploy.conftest import DATA, DEPLOY

K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.31.0"  # oldest release we support; the schemas ship with the package
VERSIONS = (KUBERNETES_VERSION, kubernetes_validate.utils.latest_version())
NOT_KUBERNETES = {"keda.sh/v1alpha1", "kustomize.config.k8s.io/v1beta1"}


def _documents() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


DOCS = _documents()
BY_KIND = {(doc["kind"], doc["metadata"]["name"] if "metadata" in doc else ""): doc for _, doc in DOCS}


def _id(item: tuple[str, dict]) -> str:
    return f"{item[0]}:{item[1]['kind']}"


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("item", [d for d in DOCS if d[1]["apiVersion"] not in NOT_KUBERNETES], ids=_id)
def test_manifest_is_valid_kubernetes(item: tuple[str, dict], version: str) -> None:
    kubernetes_validate.validate(item[1], version, strict=True)


def test_strict_validation_catches_a_typo() -> None:
    worker = json.loads(json.dumps(BY_KIND[("Deployment", "meddet-worker")]))
    worker["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("item", [d for d in DOCS if d[1]["apiVersion"] == "keda.sh/v1alpha1"], ids=_id)
def test_keda_objects_match_the_keda_fields_we_use(item: tuple[str, dict]) -> None:
    schema = json.loads((DATA / "keda.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(item[1])


def test_keda_scales_the_worker_on_the_gpu_queue() -> None:
    scaled = BY_KIND[("ScaledObject", "meddet-worker")]
    assert scaled["spec"]["scaleTargetRef"]["name"] == "meddet-worker"
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "redis" and trigger["metadata"]["listName"] == "gpu"
    assert ("TriggerAuthentication", trigger["authenticationRef"]["name"]) in BY_KIND
    assert trigger["metadata"]["address"].split(".")[0] == "redis"


def test_worker_requests_a_gpu_and_listens_to_the_gpu_queue() -> None:
    container = BY_KIND[("Deployment", "meddet-worker")]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["command"][:2] == ["meddet", "worker"] and "gpu" in container["command"]


def test_database_and_broker_are_external_services() -> None:
    for name in ("postgres", "redis"):
        assert BY_KIND[("Service", name)]["spec"]["type"] == "ExternalName"


def test_node_service_selects_the_node_pods() -> None:
    service = BY_KIND[("Service", "meddet-node")]
    labels = BY_KIND[("Deployment", "meddet-node")]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


def test_configmap_keys_are_real_settings(setting_env_names: set[str]) -> None:
    assert set(BY_KIND[("ConfigMap", "meddet-config")]["data"]) <= setting_env_names
    for _, doc in DOCS:
        if doc["kind"] == "Deployment":
            for container in doc["spec"]["template"]["spec"]["containers"]:
                assert {e["name"] for e in container.get("env", [])} <= setting_env_names


def test_everything_is_namespaced_and_listed_in_the_kustomization() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    for name, doc in DOCS:
        if doc["kind"] not in {"Namespace", "Kustomization"}:
            assert doc["metadata"]["namespace"] == "meddet", name


def test_pods_run_as_non_root() -> None:
    for _, doc in DOCS:
        if doc["kind"] == "Deployment":
            assert doc["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
