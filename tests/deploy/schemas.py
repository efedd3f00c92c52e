"""Validation of rendered objects: built-in kinds against the Kubernetes OpenAPI schemas
that kubernetes-validate bundles, custom resources against the CRD schemas vendored in
deploy/k8s/crds. Both strict: a field the API does not know is an error, as it is for
`kubectl apply` (server-side field validation)."""

from __future__ import annotations

import functools
import json
from typing import Any

import jsonschema
import kubernetes_validate

from .manifests import K8S

KUBERNETES_VERSION = "1.33"  # the oldest version these manifests are meant for
CRDS = K8S / "crds"


def validate(obj: dict[str, Any]) -> None:
    """Raises (jsonschema or kubernetes-validate's ValidationError) if `obj` is invalid."""
    schema = crd_schema(obj["apiVersion"], obj["kind"])
    if schema is None:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    else:
        jsonschema.Draft7Validator(schema).validate(obj)


@functools.cache
def crd_schema(api_version: str, kind: str) -> dict[str, Any] | None:
    """The strict schema of a custom resource kind; None for built-in API groups."""
    group = api_version.rpartition("/")[0]
    if "." not in group or group.endswith(".k8s.io"):
        return None
    path = CRDS / f"{group}_{kind}_{api_version.rpartition('/')[2]}.json"
    if not path.exists():
        raise AssertionError(
            f"no schema for {kind} {api_version} in {CRDS}: vendor its CRD with extract.py"
        )
    schema: dict[str, Any] = strict(json.loads(path.read_text())["schema"])
    return schema


def strict(schema: Any) -> Any:
    """The schema with unknown fields refused wherever the CRD lists the fields (the API
    server prunes or refuses them; either way they would be lost)."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out
