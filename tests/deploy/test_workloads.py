"""Every workload is bounded, probed, unprivileged and covered by a disruption budget;
MinT's run the project's images; production nodes get a GPU."""

from __future__ import annotations

import pytest

from .contract import IMAGES
from .manifests import OVERLAYS, Manifests, load


@pytest.fixture(params=OVERLAYS)
def manifests(request: pytest.FixtureRequest) -> Manifests:
    return load(request.param)


def test_containers_have_requests_and_limits(manifests: Manifests) -> None:
    for container in manifests.containers():
        resources = container.spec["resources"]
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources.get(bound, {})), container.spec["name"]


def test_pods_run_unprivileged(manifests: Manifests) -> None:
    for container in manifests.containers():
        name, pod = container.spec["name"], container.pod
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["enableServiceLinks"] is False, name  # the environment is the listed one
        context = container.spec["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["capabilities"] == {"drop": ["ALL"]}, name
        if container.service:
            assert context["readOnlyRootFilesystem"] is True, name
            assert pod["automountServiceAccountToken"] is False, name


def test_every_workload_has_a_disruption_budget(manifests: Manifests) -> None:
    budgets = manifests.of_kind("PodDisruptionBudget")
    for container in manifests.containers():
        if container.runs_to_completion:
            continue
        covering = [b for b in budgets if container in manifests.selected(b["spec"]["selector"])]
        assert len(covering) == 1, container.spec["name"]


def test_mint_runs_the_projects_pinned_images(manifests: Manifests) -> None:
    for service, container in manifests.mint().items():
        assert container.spec["image"] == IMAGES[service]
    for container in manifests.containers():
        name, _, tag = container.spec["image"].rpartition(":")
        assert name and tag and tag != "latest", container.spec["image"]


def test_the_router_scales_with_an_autoscaler(manifests: Manifests) -> None:
    (autoscaler,) = manifests.of_kind("HorizontalPodAutoscaler")
    target = autoscaler["spec"]["scaleTargetRef"]
    assert manifests.get(target["kind"], target["name"]) is manifests.mint()["router"].workload
    assert 1 <= autoscaler["spec"]["minReplicas"] < autoscaler["spec"]["maxReplicas"]


def test_production_nodes_run_on_gpus() -> None:
    node = load("production").mint()["node"]
    assert int(node.spec["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert node.pod["nodeSelector"]
    assert any(t["key"] == "nvidia.com/gpu" for t in node.pod["tolerations"])


def test_one_blob_collection_runs_at_a_time(manifests: Manifests) -> None:
    """Two collections at once would race over the same marks (mint/blobs/collector.py)."""
    gc = manifests.mint()["gc"]
    assert gc.workload["kind"] == "CronJob"
    assert gc.workload["spec"]["concurrencyPolicy"] == "Forbid"
    assert gc.pod["restartPolicy"] == "Never"  # the Job's backoff retries, not the kubelet


def test_production_trainer_trains_on_a_gpu() -> None:
    trainer = load("production").mint()["trainer"]
    assert int(trainer.spec["resources"]["limits"]["nvidia.com/gpu"]) == 1
    assert load("production").env(trainer)["MINT_DEVICE"] == "cuda"
