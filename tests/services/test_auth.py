"""The tokens file and bearer authentication (no server needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mint.domain.errors import Unauthenticated
from mint.rpc.auth import TokenTable, token_digest


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
