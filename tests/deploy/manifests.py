"""The rendered Kubernetes manifests (`kustomize build` of an overlay), and lookups that
the deploy tests share: workloads, their containers and the values they really get."""

from __future__ import annotations

import base64
import copy
import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from deploy.k8s import kustomize

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
OVERLAYS = ("dev", "production")
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "CronJob")
Obj = dict[str, Any]

# Which MinT service a container runs, by its command line (the console scripts, and a
# subcommand where one script runs several things).
SERVICES = {
    ("mint-registry",): "registry",
    ("mint-projector",): "projector",
    ("mint-controller",): "controller",
    ("mint-router",): "router",
    ("mint-node",): "node",
    ("mint-trainer",): "trainer",
    ("mint-evaluator",): "evaluator",
    ("mint-audit", "gc"): "gc",
}


def pod_template(workload: Obj) -> Obj:
    """A workload's pod template (a CronJob's is inside its job template)."""
    spec = workload["spec"]
    if "jobTemplate" in spec:
        return dict(spec["jobTemplate"]["spec"]["template"])
    return dict(spec["template"])


@functools.cache
def rendered(overlay: str) -> tuple[Obj, ...]:
    text = kustomize.build(K8S / "overlays" / overlay)
    return tuple(d for d in yaml.load_all(text, Loader=yaml.CSafeLoader) if d)


def load(overlay: str) -> Manifests:
    """The overlay's objects (a copy: a test may change them)."""
    return Manifests(copy.deepcopy(list(rendered(overlay))))


@dataclass(frozen=True)
class Container:
    workload: Obj
    spec: Obj

    @property
    def pod(self) -> Obj:
        return dict(pod_template(self.workload)["spec"])

    @property
    def pod_labels(self) -> dict[str, str]:
        return dict(pod_template(self.workload)["metadata"]["labels"])

    @property
    def runs_to_completion(self) -> bool:
        """A job's container (no probes, no disruption budget): it ends by itself."""
        return bool(self.workload["kind"] == "CronJob")

    @property
    def command_line(self) -> list[str]:
        return [*self.spec.get("command", []), *self.spec.get("args", [])]

    @property
    def service(self) -> str | None:
        """The MinT service it runs, or None (Kafka, S3 in the dev overlay)."""
        line = tuple(self.command_line)
        return SERVICES.get(line[:1]) or SERVICES.get(line[:2])

    @property
    def ports(self) -> dict[str, int]:
        return {p["name"]: p["containerPort"] for p in self.spec.get("ports", [])}

    def port(self, ref: int | str) -> int | None:
        """The container port a probe, Service or policy names (by number or name)."""
        if isinstance(ref, int):
            return ref if ref in self.ports.values() else None
        return self.ports.get(ref)

    def volume_for(self, path: str) -> tuple[Obj, str] | None:
        """The volume a file path lies in, and the path inside it."""
        for mount in self.spec.get("volumeMounts", []):
            root = mount["mountPath"].rstrip("/") + "/"
            if path.startswith(root):
                volume = next(v for v in self.pod["volumes"] if v["name"] == mount["name"])
                return volume, path[len(root) :]
        return None


class Manifests:
    def __init__(self, objects: list[Obj]) -> None:
        self.objects = objects

    def of_kind(self, kind: str) -> list[Obj]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> Obj:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        assert found, f"no {kind} {name} in the rendered manifests"
        return found[0]

    def workloads(self) -> list[Obj]:
        return [o for o in self.objects if o["kind"] in WORKLOAD_KINDS]

    def containers(self) -> Iterator[Container]:
        for workload in self.workloads():
            for spec in pod_template(workload)["spec"]["containers"]:
                yield Container(workload, spec)

    def mint(self) -> dict[str, Container]:
        """The MinT containers by service."""
        return {s: c for c in self.containers() if (s := c.service) is not None}

    def config_map(self, name: str) -> dict[str, str]:
        return dict(self.get("ConfigMap", name).get("data", {}))

    def secret_data(self, name: str) -> dict[str, str] | None:
        """A Secret's decoded data if the manifests hold it."""
        found = [o for o in self.of_kind("Secret") if o["metadata"]["name"] == name]
        if not found:
            return None
        data = {k: base64.b64decode(v).decode() for k, v in found[0].get("data", {}).items()}
        return data | dict(found[0].get("stringData", {}))

    def env(self, container: Container) -> dict[str, str]:
        """What each variable holds in the pod: ConfigMap and Secret values resolved,
        downward-API fields and Secrets made elsewhere as `<field:...>`/`<secret:...>`."""
        return {e["name"]: self._value(e) for e in container.spec.get("env", [])}

    def _value(self, entry: Mapping[str, Any]) -> str:
        if "value" in entry:
            return str(entry["value"])
        source = entry["valueFrom"]
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            return self.config_map(ref["name"])[ref["key"]]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            data = self.secret_data(ref["name"])
            return data[ref["key"]] if data is not None else f"<secret:{ref['name']}>"
        return f"<field:{source['fieldRef']['fieldPath']}>"

    def selected(self, selector: Mapping[str, Any]) -> list[Container]:
        """The containers whose pods a label selector (matchLabels/matchExpressions, or a
        plain Service selector) picks."""
        return [c for c in self.containers() if matches(selector, c.pod_labels)]


def matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        selector = {"matchLabels": selector}
    wanted = selector.get("matchLabels", {})
    if any(labels.get(k) != v for k, v in wanted.items()):
        return False
    for expression in selector.get("matchExpressions", []):
        value, operator = labels.get(expression["key"]), expression["operator"]
        if operator == "In" and value not in expression["values"]:
            return False
        if operator == "NotIn" and value in expression["values"]:
            return False
        if operator == "Exists" and value is None:
            return False
        if operator == "DoesNotExist" and value is not None:
            return False
    return True
