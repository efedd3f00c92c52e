"""The adapter aggregate: commands return events, state is a pure fold (no servers)."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from mint.domain import adapter
from mint.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from mint.domain.events import AdapterEvent, ChannelMoved, Provenance, RevisionPublished
from mint.domain.names import AdapterRef

REF = AdapterRef("acme", "tone")
PROV = Provenance("alice", "run-1", ("ds-1",), {"lr": "1e-4"}, {"peft": "0.13"})


def run(state: adapter.Adapter | None, events: list[AdapterEvent]) -> adapter.Adapter:
    for event in events:
        state = adapter.apply(state, event)
    assert state is not None
    return state


def created() -> adapter.Adapter:
    return run(None, adapter.create(None, "id-1", REF, "alice", "f" * 64, labels={"kind": "x"}))


def with_revisions(n: int) -> adapter.Adapter:
    state = created()
    for i in range(n):
        state = run(state, adapter.publish(state, f"{i:064x}", 10, "{}", PROV))
    return state


def test_create_then_publish_numbers_revisions_and_moves_latest() -> None:
    state = with_revisions(2)
    assert state.version == 5  # created + 2 x (published, latest moved)
    assert [r.number for r in state.revisions] == [1, 2]
    assert state.channels == {"latest": 2}
    assert state.resolve("latest").weights_sha256 == f"{1:064x}"
    events = adapter.publish(state, "a" * 64, 1, "{}", PROV, parents=(1, 2))
    assert events == [
        RevisionPublished(3, "a" * 64, 1, "{}", PROV, (1, 2)),
        ChannelMoved("latest", 3, 2, "published"),
    ]


def test_create_twice_is_refused() -> None:
    with pytest.raises(AlreadyExists, match="acme/tone"):
        adapter.create(created(), "id-2", REF, "alice", "f" * 64)


def test_unknown_method_and_bad_parent_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="method"):
        adapter.create(None, "id", REF, "alice", "f" * 64, method="dora-magic")
    with pytest.raises(NotFound, match="revision 7"):
        adapter.publish(with_revisions(1), "a" * 64, 1, "{}", PROV, parents=(7,))


def test_gate_requires_a_passing_evaluation() -> None:
    state = with_revisions(2)
    state = run(state, adapter.set_gate(state, "stable", "safety"))
    with pytest.raises(FailedPrecondition, match="safety"):
        adapter.move_channel(state, "stable", 2)
    state = run(state, adapter.record_evaluation(state, 2, "safety", {"acc": 0.4}, "d", "e", False))
    with pytest.raises(FailedPrecondition):
        adapter.move_channel(state, "stable", 2)
    state = run(state, adapter.record_evaluation(state, 2, "safety", {"acc": 0.9}, "d", "e", True))
    state = run(state, adapter.move_channel(state, "stable", 2, "promote"))
    assert state.resolve("stable").number == 2
    # Roll back to 1 is gated too: 1 was never evaluated.
    with pytest.raises(FailedPrecondition):
        adapter.move_channel(state, "stable", 1)
    state = run(state, adapter.set_gate(state, "stable", ""))
    state = run(state, adapter.move_channel(state, "stable", 1, "rollback"))
    assert state.channels["stable"] == 1


def test_archived_adapter_accepts_no_changes() -> None:
    state = with_revisions(1)
    state = run(state, adapter.archive(state, "erased by request"))
    with pytest.raises(FailedPrecondition, match="archived"):
        adapter.publish(state, "a" * 64, 1, "{}", PROV)
    with pytest.raises(FailedPrecondition):
        adapter.move_channel(state, "latest", 1)


@pytest.mark.parametrize(
    "text",
    [
        "../etc",
        "acme/../x",
        "acme/",
        "/x",
        "Acme/x",
        "acme/x/y",
        "acme/.hidden",
        "acme/a..b",
        "acme/x%2f",
        "acme/" + "a" * 129,
        "-acme/x",
        "acme/x\n",
        "acme/ x",
    ],
)
def test_hostile_names_are_refused(text: str) -> None:
    with pytest.raises(InvalidArgument):
        AdapterRef.parse(text)


def test_good_names_parse() -> None:
    assert str(AdapterRef.parse("acme-co/tone.v2_final")) == "acme-co/tone.v2_final"


def test_free_form_fields_are_bounded() -> None:
    with pytest.raises(InvalidArgument, match="labels\\['k'\\] is 5000 characters"):
        adapter.create(None, "id", REF, "alice", "f" * 64, labels={"k": "x" * 5000})
    state = with_revisions(1)
    with pytest.raises(InvalidArgument, match="finite"):
        adapter.record_evaluation(state, 1, "s", {"acc": float("nan")}, "d", "e", True)
    with pytest.raises(InvalidArgument, match="hyperparameters has 500 entries"):
        adapter.publish(
            state,
            "a" * 64,
            1,
            "{}",
            Provenance("a", hyperparameters={str(i): "v" for i in range(500)}),
        )


@pytest.mark.parametrize("seed", range(20))
def test_the_fold_of_a_compacted_state_is_that_state(seed: int) -> None:
    rng = random.Random(seed)
    state = created()
    for _ in range(rng.randrange(1, 40)):
        step = rng.random()
        if step < 0.3 or not state.revisions:
            events = adapter.publish(state, f"{rng.getrandbits(64):064x}", 10, "{}", PROV)
        elif step < 0.5:
            events = adapter.record_evaluation(
                state,
                rng.randint(1, len(state.revisions)),
                "golden",
                {"acc": rng.random()},
                "ds",
                "bob",
                rng.random() < 0.7,
            )
        elif step < 0.55:
            events = adapter.set_gate(
                state, rng.choice(["stable", "canary"]), rng.choice(["", "golden"])
            )
        elif step < 0.6:
            events = adapter.set_gate(
                state, rng.choice(["stable", "canary"]), "golden", "platform", -2.5, "e" * 64
            )
        else:
            channel = rng.choice(["stable", "canary", "latest"])
            revision = rng.randint(1, len(state.revisions))
            try:
                events = adapter.move_channel(state, channel, revision, "why")
            except FailedPrecondition:  # the gate refused it
                continue
        state = run(state, events)
    if seed % 4 == 0:
        state = run(state, adapter.archive(state, "done"))
    compacted = adapter.compact(state)
    refolded = run(None, compacted)
    assert replace(refolded, version=state.version) == state
    assert len(compacted) <= state.version  # never longer than the history
