"""The tokens file and bearer authentication (no server needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mint.domain.errors import Unauthenticated
from mint.registry import Principal
from mint.rpc.auth import TokenTable, on_behalf_of, token_digest


def test_tokens_are_stored_as_digests_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(
        json.dumps(
            {
                "tokens": [
                    {"sha256": token_digest("s3cret"), "principal": "alice", "tenants": ["acme"]}
                ]
            }
        )
    )
    table = TokenTable.from_file(path)
    assert "s3cret" not in path.read_text()
    principal = table.authenticate([("authorization", "Bearer s3cret")])
    assert (principal.name, principal.tenants, principal.admin) == (
        "alice",
        frozenset({"acme"}),
        False,
    )
    for metadata in ([], [("authorization", "Basic s3cret")], [("authorization", "Bearer no")]):
        with pytest.raises(Unauthenticated):
            table.authenticate(metadata)


def test_tenants_written_as_a_string_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(
        json.dumps(
            {"tokens": [{"sha256": token_digest("t"), "principal": "bob", "tenants": "acme"}]}
        )
    )
    with pytest.raises(ValueError, match="must be a list"):
        TokenTable.from_file(path)


def test_a_service_token_acts_for_the_caller_it_names_and_no_other_token_does(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tokens.json"
    entries = [
        {"sha256": token_digest("svc"), "principal": "router", "service": True},
        {"sha256": token_digest("eve"), "principal": "eve", "tenants": ["other"]},
    ]
    path.write_text(json.dumps({"tokens": entries}))
    table = TokenTable.from_file(path)
    alice = Principal("alice", frozenset({"acme", "beta"}))
    acting = table.authenticate_on_behalf(on_behalf_of("svc", alice))
    assert (acting.name, acting.tenants, acting.service) == ("alice", alice.tenants, False)
    # Only a service may name a caller: eve's token naming alice is still eve.
    forged = [("authorization", "Bearer eve"), *on_behalf_of("svc", alice)[1:]]
    assert table.authenticate_on_behalf(forged).name == "eve"
    with pytest.raises(Unauthenticated, match="must name the caller"):
        table.authenticate_on_behalf([("authorization", "Bearer svc")])
    # The front door does not take names from metadata: there the service is itself.
    assert table.authenticate(on_behalf_of("svc", alice)).tenants == frozenset()
