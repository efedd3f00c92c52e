"""Every overlay renders with the pinned kustomize, and every object it renders is valid
for the Kubernetes API (and, for custom resources, for their operator's CRD)."""

from __future__ import annotations

import pytest

from .manifests import OVERLAYS, load
from .schemas import validate


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_valid_objects(overlay: str) -> None:
    objects = load(overlay).objects
    assert len(objects) > 20
    problems = []
    for obj in objects:
        try:
            validate(obj)
        except Exception as exc:  # every invalid object is reported, not just the first
            problems.append(f"{obj['kind']} {obj['metadata']['name']}: {exc}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_lands_in_the_overlay_namespace(overlay: str) -> None:
    manifests = load(overlay)
    (namespace,) = manifests.of_kind("Namespace")
    for obj in manifests.objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == namespace["metadata"]["name"], obj["kind"]


def test_a_field_the_api_does_not_know_is_refused() -> None:
    """The validation is strict for built-in kinds and custom resources alike."""
    deployment = load("dev").get("Deployment", "mint-registry")
    deployment["spec"]["template"]["spec"]["containers"][0]["envFrm"] = []
    with pytest.raises(Exception, match="envFrm"):
        validate(deployment)
    user = load("production").get("KafkaUser", "mint-registry")
    user["spec"]["authorization"]["acls"][0]["operation"] = "Write"
    with pytest.raises(Exception, match="operation"):
        validate(user)
