"""Update requests in the adapter aggregate and the registry (embedded back end, no
servers): the examples are checked before anything is stored, go to a blob (not the
event), and an update finishes once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mint.backends.local_blobs import LocalBlobStore
from mint.backends.sqlite_log import SqliteEventLog
from mint.domain import adapter as agg
from mint.domain.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from mint.domain.events import UpdateFinished, UpdateRequested
from mint.domain.names import AdapterRef
from mint.registry import Principal, Registry
from mint.validation.examples import parse_examples
from tests.keys import TEST_KEK

ADMIN = Principal("ops", frozenset({"*"}), admin=True)
TRAINER = Principal("trainer", frozenset({"*"}), service=True)
ALICE = Principal("alice", frozenset({"acme"}))
REF = AdapterRef("acme", "tone")
GOOD = json.dumps({"examples": [{"prompt": "hi ", "completion": "there"}]}).encode()


@pytest.fixture
def registry(tmp_path: Path, model_files: dict) -> Registry:
    reg = Registry(
        SqliteEventLog(tmp_path / "log.db"), LocalBlobStore(tmp_path / "blobs", TEST_KEK)
    )
    reg.register_base(ADMIN, "tiny", model_files["fingerprint"], model_files["shapes"], "b1")
    reg.create_adapter(ALICE, REF, model_files["fingerprint"], "c1")
    return reg


def _counts(reg: Registry, tmp_path: Path) -> tuple[int, int]:
    events = sum(1 for _ in reg.log.read_all())
    return events, sum(1 for p in (tmp_path / "blobs").rglob("*") if p.is_file())


def test_a_request_stores_its_examples_as_a_blob_and_names_them(registry: Registry) -> None:
    outcome = registry.request_update(ALICE, REF, GOOD, "u-1")
    (requested,) = outcome.adapter.updates
    assert requested == UpdateRequested(
        "u-1", "examples", parse_examples(GOOD).sha256, len(GOOD), "stable"
    )
    assert registry.blobs.get(outcome.adapter.adapter_id, requested.examples_sha256) == GOOD
    event_bytes = registry.history(ALICE, REF)[-1].envelope.payload
    assert b"there" not in event_bytes, "the examples stay out of the log"
    again = registry.request_update(ALICE, REF, GOOD, "u-1")
    assert again.result.duplicate and len(again.adapter.updates) == 1


@pytest.mark.parametrize(
    ("examples", "kind", "says"),
    [
        (b"not json", "examples", "not UTF-8 JSON"),
        (b'{"examples": []}', "examples", "non-empty list"),
        (b'{"examples": [{"prompt": "a"}]}', "examples", "'completion'"),
        (b'{"examples": [{"prompt": "a", "completion": "b", "rating": -1}]}', "feedback", "good"),
        (b'{"examples": [{"prompt": "a", "completion": "b", "rating": -1}]}', "examples", "for"),
        (GOOD, "gossip", "unknown update kind"),
    ],
)
def test_bad_examples_are_refused_and_leave_nothing(
    registry: Registry, tmp_path: Path, examples: bytes, kind: str, says: str
) -> None:
    before = _counts(registry, tmp_path)
    with pytest.raises(InvalidArgument, match=says):
        registry.request_update(ALICE, REF, examples, "u-bad", kind=kind)
    assert _counts(registry, tmp_path) == before


def test_feedback_learns_only_what_is_rated_good() -> None:
    body = {
        "examples": [
            {"prompt": "q", "completion": "good", "rating": 1},
            {"prompt": "q", "completion": "bad", "rating": -1},
        ]
    }
    parsed = parse_examples(json.dumps(body).encode(), "feedback")
    assert [e.completion for e in parsed.learnt()] == ["good"]


def test_an_update_finishes_once_and_only_by_a_service(registry: Registry) -> None:
    registry.request_update(ALICE, REF, GOOD, "u-1")
    with pytest.raises(PermissionDenied, match="service token"):
        registry.finish_update(ALICE, REF, "u-1", 0, "held", "f-1")
    done = registry.finish_update(TRAINER, REF, "u-1", 0, "held", "f-1", reason="no gain")
    assert done.adapter.finished["u-1"] == UpdateFinished("u-1", 0, "held", "no gain")
    with pytest.raises(FailedPrecondition, match="already finished"):
        registry.finish_update(TRAINER, REF, "u-1", 0, "promoted", "f-2")
    with pytest.raises(InvalidArgument, match="outcome"):
        agg.finish_update(done.adapter, "u-1", 0, "maybe")


def test_compacted_state_keeps_the_updates(registry: Registry) -> None:
    registry.request_update(ALICE, REF, GOOD, "u-1")
    registry.request_update(ALICE, REF, GOOD, "u-2", channel="canary")
    state = registry.finish_update(TRAINER, REF, "u-1", 0, "held", "f-1").adapter
    refolded = agg.fold(agg.compact(state))
    assert refolded is not None
    assert (refolded.updates, refolded.finished) == (state.updates, state.finished)
