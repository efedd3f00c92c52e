"""`mint audit` against the real servers: the tenant's events come through WatchEvents (to
the log's end) and are checked on the client with `mint.audit`'s code; a tampered event is
caught; replay to a moment; an adapter's lineage in every format."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

import mint
from mint.eventlog.port import Recorded
from mint.v1.events_pb2 import EventEnvelope

from .conftest import EVE, ClientWorld, mint_command

REF = "acme/cli-audit"


@pytest.fixture(scope="module")
def audited(world: ClientWorld) -> list[mint.Event]:
    """acme/cli-audit: two revisions (the second from the first), stable moved to 1 then
    2 after a passing evaluation; its history."""
    lora = world.lora("cli-audit", seed=41)
    with world.client() as client:
        client.create_adapter(REF, world.fingerprint)
        client.publish_revision(REF, lora, training_run_id="run-1")  # versions 2 and 3
        client.promote(REF, "stable", 1)
        client.publish_revision(REF, lora, parents=[1])
        client.record_evaluation(REF, 2, "tone", {"accuracy": 0.9}, True)
        client.promote(REF, "stable", 2, reason="better")
        return client.history(REF)


def test_verify_checks_every_chain_of_the_tenant_on_the_client(
    audited: list[mint.Event], logged_in: Path
) -> None:
    result = mint_command("audit", "verify", "acme", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["clean"] and report["problems"] == []
    assert report["events"] >= len(audited) and report["streams"] >= 1
    assert "verified: " in result.stderr  # the progress line at the end
    text = mint_command("audit", "verify", "acme")
    assert text.stdout.strip().endswith("checked: clean")


def test_verify_names_a_tampered_event_and_exits_1(
    audited: list[mint.Event], logged_in: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The events as the server sends them, one altered on the way: the client's check
    catches it (no server sends an altered event, so the scan is wrapped)."""
    real_scan = mint.Client.scan

    def altered(client: mint.Client, tenant: str) -> Iterator[Recorded]:
        for recorded in real_scan(client, tenant):
            envelope = recorded.envelope
            if (envelope.stream_id, envelope.stream_version) == (REF, 4):
                envelope = EventEnvelope.FromString(envelope.SerializeToString())
                envelope.actor = "mallory"  # the hash no longer covers what it says
                recorded = replace(recorded, envelope=envelope)
            yield recorded

    monkeypatch.setattr(mint.Client, "scan", altered)
    result = mint_command("audit", "verify", "acme")
    assert result.exit_code == 1
    (problem,) = [line for line in result.stdout.splitlines() if line.startswith("PROBLEM")]
    assert problem.startswith(f"PROBLEM {REF} v4 at partition ")
    assert problem.endswith("hash does not match the event's contents (altered)")
    assert result.stdout.strip().endswith("checked: 1 problems")
    assert result.stderr.splitlines()[-1].startswith("error: the log does not hold what was")


def test_replay_folds_the_tenant_to_a_moment(audited: list[mint.Event], logged_in: Path) -> None:
    now = json.loads(mint_command("audit", "replay", "acme", "--json").stdout)
    adapter = now["adapters"][REF]
    assert adapter["channels"] == {"latest": 2, "stable": 2}
    assert [r["parents"] for r in adapter["revisions"]] == [[], [1]]
    second = next(e for e in audited if e.stream_version == 5)  # the second revision
    offsets = f"{second.partition}:{second.offset}"
    then = mint_command("audit", "replay", "acme", "--as-of-offsets", offsets, "--json")
    assert then.exit_code == 0, then.output
    earlier = json.loads(then.stdout)["adapters"][REF]
    assert earlier["channels"] == {"latest": 1, "stable": 1} and earlier["version"] == 4
    table = mint_command("audit", "replay", "acme", "--as-of", "2000-01-01T00:00:00Z")
    assert table.exit_code == 0 and "0 adapters, 0 base models, 0 events" in table.stdout
    assert "read: " in table.stderr
    bad = mint_command("audit", "replay", "acme", "--as-of-offsets", "zero")
    assert bad.exit_code == 2 and "PARTITION:OFFSET" in bad.output


def test_provenance_in_every_format(
    audited: list[mint.Event], logged_in: Path, tmp_path: Path
) -> None:
    text = mint_command("audit", "provenance", REF)
    assert text.exit_code == 0, text.output
    assert "revision 1: published" in text.stdout and "run run-1" in text.stdout
    assert "evaluation tone passed" in text.stdout and "-> stable" in text.stdout
    doc = json.loads(mint_command("audit", "provenance", f"{REF}@2", "--json").stdout)
    assert sorted(doc["revisions"]) == ["1", "2"] and doc["revisions"]["2"]["parents"] == [1]
    dot = mint_command("audit", "provenance", REF, "--format", "dot").stdout
    assert dot.startswith(f'digraph "{REF}" {{') and "r1 -> r2;" in dot
    assert "tone passed" in dot and "channels: latest, stable" in dot
    mermaid = mint_command("audit", "provenance", REF, "--format", "mermaid").stdout
    assert mermaid.startswith("flowchart LR\n") and "r1 --> r2" in mermaid
    svg = tmp_path / "lineage.svg"
    written = mint_command("audit", "provenance", REF, "--format", "svg", "--output", str(svg))
    assert written.exit_code == 0 and svg.read_text().startswith("<svg")
    assert f"written to {svg}" in written.stderr


def test_audit_refusals_are_one_line_with_an_exit_code(
    audited: list[mint.Event], logged_in: Path
) -> None:
    missing = mint_command("audit", "provenance", "acme/cli-audit-missing")
    assert missing.exit_code == 3
    assert missing.stderr.splitlines()[-1] == (
        "error: adapter acme/cli-audit-missing is not in the log — "
        "`mint adapter ls acme` lists the tenant's adapters"
    )
    no_revision = mint_command("audit", "provenance", f"{REF}@9")
    assert no_revision.exit_code == 3 and "no revision 9 — " in no_revision.stderr
    other = mint_command("audit", "verify", "acme", env={"MINT_TOKEN": EVE})
    assert other.exit_code == 4 and "use a token of this tenant" in other.stderr
    assert len(other.stderr.splitlines()) == 1
    every = mint_command("audit", "verify", "*")
    assert every.exit_code == 2 and "invalid tenant" in every.output.lower()
    bad_ref = mint_command("audit", "provenance", "acme/cli-audit@two")
    assert bad_ref.exit_code == 2 and "tenant/name@REVISION" in bad_ref.output


def test_an_event_this_install_cannot_read_asks_for_an_upgrade(
    audited: list[mint.Event], logged_in: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A newer server's event type (appended to the real events on their way): replay and
    provenance cannot fold it, and say how to get a mint that can."""
    real_scan = mint.Client.scan

    def newer(client: mint.Client, tenant: str) -> Iterator[Recorded]:
        last = None
        for last in real_scan(client, tenant):
            yield last
        assert last is not None
        envelope = EventEnvelope(stream_id=REF, event_type="mint.v1.SomethingNewer")
        yield replace(last, envelope=envelope)

    monkeypatch.setattr(mint.Client, "scan", newer)
    for command in (("replay", "acme"), ("provenance", REF)):
        result = mint_command("audit", *command)
        assert result.exit_code == 1, result.output
        assert result.stderr.splitlines()[-1] == (
            "error: unknown event type 'mint.v1.SomethingNewer' — this log is newer than this "
            "mint: pip install -U mint"
        )


def test_verify_of_a_tenant_without_events_says_so_not_clean(logged_in: Path) -> None:
    result = mint_command("audit", "verify", "other", env={"MINT_TOKEN": EVE})
    assert result.exit_code == 0, result.output
    assert "no events of tenant other: nothing to check" in result.stdout
    assert "clean" not in result.stdout
