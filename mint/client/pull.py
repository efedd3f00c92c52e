"""Adapters as local PEFT folders, the way huggingface_hub caches models: `pull` downloads
a revision's files through the registry into a cache keyed by content hash, and
`load_adapter` loads one onto a base model with PEFT.

Cache layout (`$MINT_ADAPTER_CACHE`, default `$XDG_CACHE_HOME/mint/adapters`):

    blobs/<sha256>                                  each file's bytes, named by their hash
    revisions/<tenant>/<name>/<revision>/           a PEFT folder: links to its blobs
        adapter_config.json, adapter_model.safetensors

A revision never changes, so a cached one is used again, but its blobs are hashed on each
pull: a file altered on disk is detected and downloaded again.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

from mint.domain.errors import InvalidArgument
from mint.domain.names import AdapterRef
from mint.layout import ADAPTER_CONFIG, ADAPTER_WEIGHTS

from . import login
from .base_model import MissingExtra
from .errors import DataLoss, FailedPrecondition, raising_mint_errors
from .sync import Client
from .types import Adapter, Revision, Selector


def cache_root() -> Path:
    configured = os.environ.get("MINT_ADAPTER_CACHE")
    if configured:
        return Path(configured)
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "mint" / "adapters"


def client_from_login() -> Client:
    """A client for the registry `mint login` stored (or MINT_REGISTRY and MINT_TOKEN)."""
    settings = login.current()
    if not (settings.registry and settings.token):
        raise ValueError(
            "no registry or token: run `mint login` (or set MINT_REGISTRY and MINT_TOKEN)"
        )
    return Client(settings.registry, router=settings.router or None, token=settings.token)


def pull(ref: str, *, client: Client | None = None, cache_dir: str | Path | None = None) -> Path:
    """The PEFT folder of `ref` (`tenant/name@channel`, `tenant/name@<revision>`, or
    `tenant/name` for its `latest`), downloaded unless cached. An erased adapter is refused
    (`FailedPrecondition`), cached or not. `client`: default, one from the stored login."""
    selector = _checked(ref)
    if client is None:
        with client_from_login() as own:
            return pull(ref, client=own, cache_dir=cache_dir)
    _refuse_if_erased(client.get_adapter(selector.adapter))
    at = selector.revision if selector.revision is not None else selector.channel or "latest"
    revision = client.get_revision(selector.adapter, at)
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    config = revision.config_json.encode()
    blobs = {
        ADAPTER_CONFIG: _blob(root, hashlib.sha256(config).hexdigest(), lambda: config),
        ADAPTER_WEIGHTS: _blob(
            root,
            revision.weights_sha256,
            lambda: _download(client, selector.adapter, revision.number),
        ),
    }
    return _folder(root, selector.adapter, revision, blobs)


def _checked(ref: str) -> Selector:
    selector = Selector.parse(ref)
    try:  # the cache path is made of it: a name, not a path
        AdapterRef.parse(selector.adapter)
    except InvalidArgument as exc:
        raise ValueError(str(exc)) from None
    return selector


def _refuse_if_erased(adapter: Adapter) -> None:
    """A revision still names its sha256 once erased, and the cache may still hold those
    bytes: only the adapter says it is gone, and then nothing of it is served."""
    if adapter.erased:
        raise FailedPrecondition(
            f"adapter {adapter.ref} was erased at {adapter.erased_at}: its weights are gone "
            "for good; publish to a new adapter"
        )


def _download(client: Client, adapter: str, number: int) -> bytes:
    with raising_mint_errors():
        return client.registry.download_weights(adapter, number)


def _blob(root: Path, sha256: str, fetch: Any) -> Path:
    """`blobs/<sha256>`, kept if its bytes still hash to it, else (re)written from `fetch`."""
    path = root / "blobs" / sha256
    if path.is_file() and _sha256(path.read_bytes()) == sha256:
        return path
    data: bytes = fetch()
    if _sha256(data) != sha256:
        raise DataLoss(f"downloaded bytes do not match their sha256 {sha256}: pull again")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as partial:
        partial.write(data)
    os.replace(partial.name, path)  # whole or not at all
    return path


def _folder(root: Path, adapter: str, revision: Revision, blobs: dict[str, Path]) -> Path:
    folder = root / "revisions" / adapter / str(revision.number)
    folder.mkdir(parents=True, exist_ok=True)
    for name, blob in blobs.items():
        link = folder / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, folder))
    return folder


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_adapter(
    base_model: Any,
    ref: str,
    *,
    client: Client | None = None,
    cache_dir: str | Path | None = None,
    **peft_options: Any,
) -> Any:
    """`peft.PeftModel.from_pretrained(base_model, pull(ref))`: needs `mint[serving]`."""
    try:
        from peft import PeftModel
    except ImportError as exc:
        raise MissingExtra(
            f"loading an adapter needs peft and torch ({exc}): pip install 'mint[serving]'"
        ) from exc
    folder = pull(ref, client=client, cache_dir=cache_dir)
    return PeftModel.from_pretrained(base_model, str(folder), **peft_options)
