"""Where the `mint` command and `mint.pull` find the registry, the router and the token:
`mint login` stores them in the user's config dir (readable by the user alone);
`MINT_REGISTRY`, `MINT_ROUTER` and `MINT_TOKEN` override what is stored."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import typer

ENV = {"registry": "MINT_REGISTRY", "router": "MINT_ROUTER", "token": "MINT_TOKEN"}


@dataclass(frozen=True)
class Login:
    registry: str = ""
    router: str = ""
    token: str = ""


def login_path() -> Path:
    """`$XDG_CONFIG_HOME/mint/login.json` on Linux (typer's app dir: per platform)."""
    return Path(typer.get_app_dir("mint")) / "login.json"


def save(login: Login) -> Path:
    path = login_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Created 0600 (never world-readable, not even for a moment).
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # an older file: made private before the token is in it
    with os.fdopen(descriptor, "w") as file:
        json.dump(asdict(login), file, indent=2)
    return path


def stored() -> Login:
    path = login_path()
    if not path.is_file():
        return Login()
    try:
        fields = json.loads(path.read_text())
        return Login(**{k: str(fields.get(k, "")) for k in ENV})
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path} is unreadable ({exc}): run `mint login` again") from exc


def current() -> Login:
    """What is stored, each field overridden by its environment variable when that is set."""
    overrides = {field: os.environ[name] for field, name in ENV.items() if os.environ.get(name)}
    return replace(stored(), **overrides)
