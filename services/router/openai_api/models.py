"""`/v1/models`: the adapters a caller may use, read from the names of the projection's
catalog entries (`catalog/<tenant>/<name>.json`): one listing per tenant, or one over
every tenant for a principal of all of them ("*"), and no entry read."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mint.catalog.port import ENTRY_SUFFIX
from mint.catalog.projection import ListedObjects
from mint.layout import catalog_prefix
from mint.registry import Principal

MAX_MODELS = 1000  # at most this many adapters are listed (one S3 listing's worth)
CATALOG = catalog_prefix("")[:-1]  # "catalog/": every tenant's entries


def listed_models(
    objects: ListedObjects,
    principal: Principal,
    is_erased: Callable[[str], bool],
    limit: int = MAX_MODELS,
) -> list[dict[str, Any]]:
    """OpenAI's model objects for the adapters of `principal`'s tenants, by tenant and
    name, at most `limit` of them, leaving out those `is_erased` (their entries stay in
    the catalog to say so)."""
    every = "*" in principal.tenants
    prefixes = [CATALOG] if every else [catalog_prefix(t) for t in sorted(principal.tenants)]
    listed: list[dict[str, Any]] = []
    for prefix in prefixes:
        for key in objects.keys_after(prefix, "", limit - len(listed)):
            tenant, _, name = key[len(CATALOG) :].removesuffix(ENTRY_SUFFIX).partition("/")
            if name and key.endswith(ENTRY_SUFFIX) and not is_erased(f"{tenant}/{name}"):
                listed.append(_model(tenant, name))
        if len(listed) >= limit:
            break
    return listed


def _model(tenant: str, name: str) -> dict[str, Any]:
    return {"id": f"{tenant}/{name}", "object": "model", "created": 0, "owned_by": tenant}
