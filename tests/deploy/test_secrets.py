"""Every ConfigMap and Secret a pod uses exists (in the overlay, made by an operator from
a resource in the overlay, or documented for the operator to create) with the keys it
reads, and every file a setting names is mounted there."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from .contract import EXTERNAL_SECRETS
from .manifests import K8S, OVERLAYS, Container, Manifests, load

CERT_MANAGER_KEYS = {"tls.crt", "tls.key", "ca.crt"}
KAFKA_USER_KEYS = {"user.crt", "user.key", "user.p12", "user.password", "ca.crt"}
CLUSTER_CA_KEYS = {"ca.crt", "ca.p12", "ca.password"}


def secrets(manifests: Manifests, overlay: str) -> dict[str, set[str]]:
    """The Secrets there will be, with their keys."""
    found = {name: set(keys) for name, keys in EXTERNAL_SECRETS[overlay].items()}
    for secret in manifests.of_kind("Secret"):
        name = secret["metadata"]["name"]
        found[name] = set(manifests.secret_data(name) or {})
    for certificate in manifests.of_kind("Certificate"):
        found[certificate["spec"]["secretName"]] = CERT_MANAGER_KEYS
    for user in manifests.of_kind("KafkaUser"):
        found[user["metadata"]["name"]] = KAFKA_USER_KEYS
    for kafka in manifests.of_kind("Kafka"):
        found[f"{kafka['metadata']['name']}-cluster-ca-cert"] = CLUSTER_CA_KEYS
    return found


def references(container: Container) -> Iterator[tuple[str, str, str | None]]:
    """(kind, name, key or None) of every ConfigMap and Secret the container reads."""
    for entry in container.spec.get("env", []):
        for kind in ("configMapKeyRef", "secretKeyRef"):
            ref = entry.get("valueFrom", {}).get(kind)
            if ref:
                yield kind, ref["name"], ref["key"]
    for volume in container.pod.get("volumes", []):
        sources = volume.get("projected", {}).get("sources", [volume])
        for source in sources:
            if "secret" in source:
                secret = source["secret"]
                name = secret.get("secretName") or secret["name"]
                for item in secret.get("items", [{"key": None}]):
                    yield "secretKeyRef", name, item["key"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_what_pods_read_exists(overlay: str) -> None:
    manifests = load(overlay)
    config_maps = {c["metadata"]["name"]: set(c["data"]) for c in manifests.of_kind("ConfigMap")}
    available = {"configMapKeyRef": config_maps, "secretKeyRef": secrets(manifests, overlay)}
    for container in manifests.containers():
        for kind, name, key in references(container):
            keys = available[kind].get(name)
            assert keys is not None, f"{container.spec['name']}: no {kind} source {name}"
            assert key is None or key in keys, f"{container.spec['name']}: {name} has no {key}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_files_that_settings_name_are_mounted(overlay: str) -> None:
    manifests = load(overlay)
    available = secrets(manifests, overlay)
    for service, container in manifests.mint().items():
        for variable, path in manifests.env(container).items():
            if not variable.endswith(("FILE", "CAFILE")):
                continue
            found = container.volume_for(path)
            assert found is not None, f"{service}: {variable}={path} is on no volume"
            volume, file = found
            assert file in files(volume, available), f"{service}: {variable}={path}"


def files(volume: dict[str, Any], secrets: dict[str, set[str]]) -> set[str]:
    """The file names a secret or projected volume shows."""
    names: set[str] = set()
    for source in volume.get("projected", {}).get("sources", [volume]):
        secret = source.get("secret", {})
        name = secret.get("secretName") or secret.get("name")
        if "items" in secret:
            names |= {item["path"] for item in secret["items"]}
        elif name:
            names |= secrets[name]
    return names


def test_readme_says_how_to_create_each_external_secret() -> None:
    readme = (K8S / "README.md").read_text()
    for name, keys in EXTERNAL_SECRETS["production"].items():
        create = f"kubectl -n mint create secret generic {name} "
        # the command and its continuation lines
        command = re.search(rf"{re.escape(create)}([^\n]*\\\n)*[^\n]*", readme)
        assert command, f"README: no `{create}`"
        for key in keys:
            assert re.search(rf"--from-(literal|file)={re.escape(key)}=", command.group()), key
