"""Acceptance of the bare install: the wheel built afresh, installed into a new virtualenv
without torch (nor Kafka or S3 libraries), and its `mint` command run as a program against
the test servers (registry, router and node of tests/client/conftest.py): an adapter's
life through publish (with its progress) to pull and `audit verify`, and the refusals a
user meets, each one line on stderr with a non-zero exit code."""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid
from pathlib import Path

from mint.layout import ADAPTER_WEIGHTS
from mint.models.base import build_base, fingerprint
from tests.serving.world import base_config

from .conftest import ADMIN, ALICE, ClientWorld
from .installed import InstalledClient, output

NOT_INSTALLED = ("torch", "kafka", "minio", "pydantic_settings", "transformers", "peft")


def _one_line(result: subprocess.CompletedProcess[str], code: int, starts: str) -> None:
    assert result.returncode == code, output(result)
    assert len(result.stderr.splitlines()) == 1, output(result)
    assert result.stderr.startswith(starts), output(result)


def test_the_bare_install_has_no_torch(installed_client: InstalledClient) -> None:
    found = installed_client.python(
        "import importlib.util as u, mint\n"
        f"print(mint.__file__, *(u.find_spec(n) for n in {NOT_INSTALLED!r}))"
    )
    assert found.split() == [str(installed_client.site / "mint" / "__init__.py")] + ["None"] * len(
        NOT_INSTALLED
    )
    version = installed_client.mint("--version")
    assert (version.returncode, version.stdout) == (0, "mint 0.1.0\n")


def test_an_adapter_from_login_to_audit_with_the_installed_command(
    world: ClientWorld, installed_client: InstalledClient, tmp_path: Path
) -> None:
    mint = installed_client.mint
    ref = f"acme/wheel-{uuid.uuid4().hex[:8]}"
    login = mint("login", "--registry", world.registry, "--router", world.router, "--token", ALICE)
    assert login.returncode == 0 and login.stdout.startswith("logged in to"), output(login)

    # A base is hashed from its files, without torch: to what the node serving it computed.
    base = tmp_path / "tiny-base"
    build_base(base_config(), seed=0).save_pretrained(base)
    denied = mint("base", "register", str(base))
    _one_line(denied, 4, "error: ")  # Alice is no admin
    other = tmp_path / "other-base"
    build_base(base_config(), seed=5).save_pretrained(other)
    for folder, name, hashed in (
        (base, "tiny", world.fingerprint),  # the fixture registered it first, as "tiny"
        (other, "other-base", fingerprint(build_base(base_config(), seed=5))),
    ):
        register = mint("base", "register", str(folder), "--json", env={"MINT_TOKEN": ADMIN})
        assert register.returncode == 0, output(register)
        registered = json.loads(register.stdout)
        assert (registered["name"], registered["fingerprint"]) == (name, hashed)

    created = mint("adapter", "create", ref, "--base", world.fingerprint, "--json")
    assert created.returncode == 0, output(created)
    assert json.loads(created.stdout)["adapter"]["base_fingerprint"] == world.fingerprint
    lora = world.lora("wheel", seed=51)
    published = mint("adapter", "publish", ref, str(lora))
    assert published.returncode == 0, output(published)
    assert f"published {ref} revision 1; {ref} is at version 3" in published.stdout
    size = (lora / ADAPTER_WEIGHTS).stat().st_size
    assert "uploading" in published.stderr and f"{size / 1000:.1f} kB" in published.stderr
    promoted = mint("adapter", "promote", ref, "stable", "1", "--reason", "first")
    assert promoted.returncode == 0 and promoted.stdout.startswith("stable -> revision 1;")

    history = mint("adapter", "history", ref, "--json")
    assert history.returncode == 0, output(history)
    events = json.loads(history.stdout)
    names = [e["event_type"].rpartition(".")[2] for e in events]
    assert names == ["AdapterCreated", "RevisionPublished", "ChannelMoved", "ChannelMoved"]
    weights = (lora / ADAPTER_WEIGHTS).read_bytes()
    assert events[1]["payload"]["weights_sha256"] == hashlib.sha256(weights).hexdigest()

    pulled = mint("adapter", "pull", f"{ref}@stable", str(tmp_path / "pulled"))
    assert pulled.returncode == 0, output(pulled)
    assert (tmp_path / "pulled" / ADAPTER_WEIGHTS).read_bytes() == weights
    audit = mint("audit", "verify", "acme", "--json")
    assert audit.returncode == 0, output(audit)
    assert json.loads(audit.stdout)["clean"] and "verified: " in audit.stderr


def test_the_installed_command_refuses_in_one_line(
    world: ClientWorld, installed_client: InstalledClient
) -> None:
    def mint(*args: str, token: str = ALICE) -> subprocess.CompletedProcess[str]:
        # The variables in place of a stored login.
        return installed_client.mint(
            *args, env={"MINT_REGISTRY": world.registry, "MINT_TOKEN": token}
        )

    _one_line(
        mint("adapter", "show", "acme/anything", token="wrong"),
        4,
        "error: unknown or revoked token",
    )
    _one_line(
        mint("adapter", "show", "acme/wheel-unknown"),
        3,
        "error: adapter acme/wheel-unknown does not exist — check the name",
    )
    wrong_base = mint("adapter", "create", "acme/wheel-wrong-base", "--base", "0" * 64)
    _one_line(wrong_base, 3, "error: ")
    assert "0" * 64 in wrong_base.stderr and "request id" in wrong_base.stderr
    _one_line(
        mint("adapter", "publish", "acme/wheel-unknown", "/nonexistent"),
        2,
        "error: Invalid value for 'folder': dir '/nonexistent' does not exist — see "
        "`mint adapter publish --help`",
    )
    # The local stack is a checkout's tooling: the wheel says so.
    _one_line(mint("stack", "status"), 1, "error: the local stack comes with a MinT checkout")
