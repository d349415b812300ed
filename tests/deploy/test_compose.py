"""deploy/compose.yaml: valid against the Compose Specification schema, and consistent."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import yaml

from tests.deploy.conftest import DATA, DEPLOY, REPO


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_compose_file_matches_the_compose_spec_schema(compose: dict) -> None:
    schema = json.loads((DATA / "compose-spec.json").read_text())
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator_cls(schema).iter_errors(compose)]
    assert errors == []


def test_schema_rejects_a_misspelt_key(compose: dict) -> None:
    """The vendored schema is strict enough to catch a typo (guards against a toothless test)."""
    schema = json.loads((DATA / "compose-spec.json").read_text())
    broken = {**compose, "services": {**compose["services"], "node": {**compose["services"]["node"], "enviroment": {}}}}
    assert not jsonschema.validators.validator_for(schema)(schema).is_valid(broken)


def test_the_stack_has_every_service(compose: dict) -> None:
    assert {"redis", "postgres", "node", "worker", "orthanc"} <= set(compose["services"])


def test_worker_reserves_an_nvidia_gpu(compose: dict) -> None:
    devices = compose["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)


def test_references_resolve(compose: dict) -> None:
    services = compose["services"]
    named_volumes = set(compose.get("volumes", {}))
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown service {dependency}"
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts missing file {source}"
            else:
                assert source in named_volumes, f"{name} uses undeclared volume {source}"
        if "build" in service:
            context = (DEPLOY / service["build"]["context"]).resolve()
            assert context == REPO
            assert (context / service["build"]["dockerfile"]).is_file()


def test_images_are_pinned(compose: dict) -> None:
    for name, service in compose["services"].items():
        if "image" in service:
            tag = service["image"].rsplit("/", 1)[-1].partition(":")[2]
            assert tag and tag != "latest", f"{name}: image {service['image']} is not pinned"


def test_meddet_environment_names_are_real_settings(compose: dict, setting_env_names: set[str]) -> None:
    for name, service in compose["services"].items():
        for key in service.get("environment", {}):
            if key.startswith("MEDDET_") and not re.match(r"MEDDET_NODE_", key):
                assert key in setting_env_names, f"{name}: {key} is not a MedDet setting"


def test_node_listens_beyond_loopback_only_with_an_allow_list(compose: dict) -> None:
    env = compose["services"]["node"]["environment"]
    assert env["MEDDET_HOST"] == "0.0.0.0"
    assert env.get("MEDDET_ALLOWED_AES") or env.get("MEDDET_ALLOWED_IPS")
