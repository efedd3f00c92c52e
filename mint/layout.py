"""File and key names of the Hugging Face PEFT layout, in one place.

A revision stored by MinT loads with `peft.PeftModel.from_pretrained` unchanged.
"""

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
MANIFEST = "manifest.json"


def adapter_prefix(tenant: str, name: str) -> str:
    """Where an adapter's objects live in the projection."""
    return f"adapters/{tenant}/{name}/"


def revision_prefix(tenant: str, name: str, number: int) -> str:
    """Where one revision's files (the PEFT folder plus its manifest) live."""
    return f"{adapter_prefix(tenant, name)}revisions/{number}/"


def catalog_prefix(tenant: str) -> str:
    """Where a tenant's catalog entries live in the projection: one `<name>.json` each."""
    return f"catalog/{tenant}/"
