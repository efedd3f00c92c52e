"""Erasing an adapter through the client and the `mint` command, against the real
servers (registry, controller, node, router): a resident adapter is erased, the node
drops it, generation and downloads are refused with the time of the erasure (never
UNAVAILABLE), `/v1/models` no longer lists it, the adapter reads back erased, erasing
again changes nothing."""

from __future__ import annotations

import json
import time

import pytest
from openai import OpenAI
from typer.testing import CliRunner

import mint
from mint.cli_app import app

from .conftest import NODE, ClientWorld


def test_a_resident_adapter_erased_is_dropped_and_refused_everywhere(
    world: ClientWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = "acme/erase-me"
    with world.client() as client:
        client.create_adapter(ref, world.fingerprint)
        client.publish_revision(ref, world.lora("erase-me", seed=31))
        client.promote(ref, "stable", 1)
        world.project()
        assert client.generate("hello", f"{ref}@stable", timeout_s=90).node == NODE

        for name, value in (("MINT_REGISTRY", world.registry), ("MINT_TOKEN", "alice-token")):
            monkeypatch.setenv(name, value)
        erased = CliRunner().invoke(app, ["adapter", "erase", ref, "--yes", "--json"])
        assert erased.exit_code == 0, erased.output
        erased_at = json.loads(erased.stdout)["adapter"]["erased_at"]
        assert erased_at

        adapter = client.get_adapter(ref)
        assert adapter.erased and adapter.erased_at == erased_at
        again = client.erase(ref)
        assert again.duplicate and again.adapter.version == adapter.version
        with pytest.raises(mint.FailedPrecondition, match=f"{ref} was erased at {erased_at}"):
            mint.pull(f"{ref}@1", client=client, cache_dir=world.root / "pulled")
        deadline = time.monotonic() + 10  # the router hears of it within a poll
        while True:
            try:
                client.generate("hello", f"{ref}@1", timeout_s=10)
            except mint.FailedPrecondition as refused:
                assert f"{ref} was erased at {erased_at}" in refused.message
                break
            assert time.monotonic() < deadline, "the router kept serving an erased adapter"
        listed = OpenAI(base_url=world.openai_url, api_key="alice-token", max_retries=0).models
        assert ref not in {model.id for model in listed.list()}
        world.project()
        with pytest.raises(mint.FailedPrecondition, match="was erased at"):
            client.generate("hello", f"{ref}@stable", timeout_s=10)
    fleet = world.world.wait_for_reports(lambda f: NODE in f.nodes, timeout_s=10)
    assert all(adapter_id != adapter.adapter_id for adapter_id, _ in fleet.nodes[NODE].resident)
