"""The tokens file and bearer authentication (no server needed)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from mint.domain.errors import Unauthenticated
from mint.registry import Principal
from mint.rpc.auth import OnBehalf, TokenMetrics, TokenTable, on_behalf_of, token_digest


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


@pytest.mark.parametrize("digest", ["zz", token_digest("t").upper(), "t"])
def test_a_digest_no_token_could_match_is_refused(tmp_path: Path, digest: str) -> None:
    """Else its principal would be locked out without a word."""
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": [{"sha256": digest, "principal": "bob"}]}))
    with pytest.raises(ValueError, match=r"the sha256 of 'bob' .* not 64 lower-case hex"):
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


def _entry(token: str, name: str, **more: object) -> dict[str, object]:
    return {"sha256": token_digest(token), "principal": name, "tenants": ["acme"], **more}


def _secret_volume(folder: Path, version: str, entries: list[dict[str, object]]) -> None:
    """What the kubelet does to a mounted Secret: the new content in a fresh directory,
    then the `..data` link swapped to it (tokens.json -> ..data/tokens.json stays)."""
    (folder / version).mkdir()
    (folder / version / "tokens.json").write_text(json.dumps({"tokens": entries}))
    (folder / "..data_tmp").symlink_to(version)
    (folder / "..data_tmp").replace(folder / "..data")
    if not (folder / "tokens.json").is_symlink():
        (folder / "tokens.json").symlink_to("..data/tokens.json")


def test_a_swapped_secret_is_read_again_within_the_reload_period(tmp_path: Path) -> None:
    _secret_volume(tmp_path, "..v1", [_entry("a", "alice"), _entry("b", "bob")])
    table = TokenTable.from_file(tmp_path / "tokens.json", reload_s=0.2)
    assert table.authenticate([("authorization", "Bearer a")]).name == "alice"
    _secret_volume(tmp_path, "..v2", [_entry("b", "bob")])
    time.sleep(0.25)
    with pytest.raises(Unauthenticated, match="revoked"):
        table.authenticate([("authorization", "Bearer a")])
    assert table.authenticate([("authorization", "Bearer b")]).name == "bob"


def test_a_broken_file_keeps_the_last_good_tokens_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": [_entry("a", "alice")]}))
    table = TokenTable.from_file(path, reload_s=0.1)
    metrics = CollectorRegistry()
    metrics.register(TokenMetrics(table))
    path.write_text('{"tokens": [{"sha256": "')  # cut short, as a bad edit would
    time.sleep(0.15)
    with caplog.at_level(logging.ERROR):
        assert table.authenticate([("authorization", "Bearer a")]).name == "alice"
    assert "keeping the tokens last read" in caplog.text and str(path) in caplog.text
    assert metrics.get_sample_value("mint_tokens_file_rejected") == 1
    assert metrics.get_sample_value("mint_tokens_reload_failures_total") == 1
    time.sleep(0.15)
    table.authenticate([("authorization", "Bearer a")])
    assert table.reload_failures == 1  # the same bad file is not counted again
    path.write_text(json.dumps({"tokens": [_entry("b", "bob")]}))
    time.sleep(0.15)
    assert table.authenticate([("authorization", "Bearer b")]).name == "bob"
    assert metrics.get_sample_value("mint_tokens_file_rejected") == 0


def test_a_scrape_finds_a_broken_file_while_no_call_comes(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": [_entry("a", "alice")]}))
    table = TokenTable.from_file(path, reload_s=0.1)
    metrics = CollectorRegistry()
    metrics.register(TokenMetrics(table))
    assert metrics.get_sample_value("mint_tokens_file_rejected") == 0
    path.write_text("not json")
    time.sleep(0.15)
    assert metrics.get_sample_value("mint_tokens_file_rejected") == 1
    assert metrics.get_sample_value("mint_tokens_reload_failures_total") == 1


def test_a_file_that_does_not_parse_at_start_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": [{"principal": "alice"}]}))
    with pytest.raises(ValueError, match="no 'sha256' field; it must be JSON like"):
        TokenTable.from_file(path)
    with pytest.raises(ValueError, match="No such file"):
        TokenTable.from_file(tmp_path / "missing.json")


def test_a_trusted_certificate_acts_for_the_caller_it_names_and_others_need_tokens() -> None:
    tokens = TokenTable([(token_digest("eve"), Principal("eve", frozenset({"other"})))])
    node = OnBehalf(tokens, frozenset({"mint-router"}))
    alice = Principal("alice", frozenset({"acme"}))
    acting = node(on_behalf_of(None, alice), frozenset({"mint-router", "router.mint.svc"}))
    assert (acting.name, acting.tenants, acting.service) == ("alice", alice.tenants, False)
    with pytest.raises(Unauthenticated, match="must name the caller"):
        node([], frozenset({"mint-router"}))
    with pytest.raises(Unauthenticated, match="names mallory, which this server does not"):
        node(on_behalf_of(None, alice), frozenset({"mallory"}))
    # Another certificate with a token of its own is that token's caller, not the named one.
    with_token = [("authorization", "Bearer eve"), *on_behalf_of(None, alice)]
    assert node(with_token, frozenset({"mallory"})).name == "eve"
    with pytest.raises(Unauthenticated, match="missing `authorization"):
        node(on_behalf_of(None, alice), frozenset())  # no certificate, no token
