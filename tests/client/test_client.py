"""`mint.Client` against the real servers: an adapter's life from creation to archive,
evaluations and gates, retries by request id, lists, the history and a watch, each
refusal as its typed exception, and generation through the router."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from dataclasses import astuple
from pathlib import Path

import pytest

import mint
from deploy.local.stack import free_ports
from mint.client import Evaluation, Gate, ResolvedAdapter, Sampling, Selector, build
from mint.domain.events import (
    AdapterArchived,
    AdapterCreated,
    ChannelGateSet,
    ChannelMoved,
    RevisionPublished,
    UpdateRequested,
)
from mint.layout import ADAPTER_WEIGHTS
from mint.models.base import build_base
from tests.serving.world import base_config

from .conftest import ADMIN, EVE, NODE, UPLOAD_LIMIT, ClientWorld, Served


def test_describe_base_gives_what_a_node_serving_the_folder_computes(
    world: ClientWorld, tmp_path: Path
) -> None:
    folder = tmp_path / "tiny-base"
    build_base(base_config(), seed=0).save_pretrained(folder)  # what a node builds
    base = mint.describe_base(folder)
    assert (base.name, base.fingerprint) == ("tiny-base", world.fingerprint)
    with world.client(ADMIN) as admin:
        registered = admin.register_base(
            base.name, base.fingerprint, base.parameters, request_id="base-again"
        )
    assert registered.fingerprint == world.fingerprint
    assert registered.name == "tiny"  # registered before: the first registration stands
    assert dict(registered.parameters) == dict(base.parameters)
    with pytest.raises(FileNotFoundError, match=r"config.json and \*.safetensors"):
        mint.describe_base(tmp_path)


def test_an_adapter_from_creation_to_archive(world: ClientWorld) -> None:
    sent: list[tuple[int, int]] = []
    ref = "acme/life"
    with world.client() as client:
        created = client.create_adapter(
            ref, world.fingerprint, labels={"kind": "tone"}, request_id="create-life"
        )
        assert (created.request_id, created.first_version, created.duplicate) == (
            "create-life",
            1,
            False,
        )
        assert (created.adapter.ref, created.adapter.labels) == (ref, {"kind": "tone"})
        first_folder = world.lora("life-1", seed=2)
        client.publish_revision(
            ref,
            first_folder,
            training_run_id="run-1",
            hyperparameters={"lr": "1e-4"},
            progress=lambda done, total: sent.append((done, total)),
        )
        second = client.publish_revision(ref, world.lora("life-2", seed=3), parents=[1])
        client.promote(ref, "stable", 1)
        client.promote(ref, "stable", 2, reason="better")
        rolled_back = client.rollback(ref, "stable")
        archived = client.archive(ref, reason="done")
        shown = client.get_adapter(ref)
        by_channel = client.get_revision(ref, "stable")
        first = client.get_revision(ref, 1)
        events = client.history(ref)
        with pytest.raises(mint.FailedPrecondition) as refused:
            client.promote(ref, "stable", 2, request_id="too-late")

    weights = (first_folder / ADAPTER_WEIGHTS).read_bytes()
    assert sent[-1] == (len(weights), len(weights))
    assert [r.number for r in second.adapter.revisions] == [1, 2]
    assert second.adapter.revision(2).parents == (1,)
    assert first.weights_sha256 == hashlib.sha256(weights).hexdigest()
    assert first.provenance.principal == "alice"
    assert (first.provenance.training_run_id, first.provenance.hyperparameters) == (
        "run-1",
        {"lr": "1e-4"},
    )
    assert first.config["r"] == 4
    assert rolled_back.adapter.channels == {"stable": 1, "latest": 2}
    assert by_channel.number == 1
    assert archived.adapter.archived and shown.archived and shown.version == 9
    payloads = [e.payload for e in events]
    assert [type(p) for p in payloads] == [
        AdapterCreated,
        *[RevisionPublished, ChannelMoved] * 2,  # a publish moves `latest` too
        *[ChannelMoved] * 3,
        AdapterArchived,
    ]
    assert payloads[7] == ChannelMoved("stable", 1, 2, "rollback")
    assert [e.stream_version for e in events] == list(range(1, 10))
    assert events[0].request_id == "create-life" and {e.actor for e in events} == {"alice"}
    assert all(e.prev_hash == before.hash for before, e in itertools.pairwise(events))
    assert refused.value.request_id == "too-late" and "archived" in refused.value.message


def test_a_retried_evaluation_returns_the_first_result_and_gates_promotion(
    world: ClientWorld,
) -> None:
    ref = "acme/evals"
    with world.client() as client:
        client.create_adapter(ref, world.fingerprint)
        client.publish_revision(ref, world.lora("evals-1", seed=4))
        client.publish_revision(ref, world.lora("evals-2", seed=5))
        client.set_gate(ref, "stable", "tone-suite")
        first = client.record_evaluation(
            ref, 1, "tone-suite", {"accuracy": 0.9}, True, request_id="eval-1"
        )
        again = client.record_evaluation(  # run again, scored otherwise: the first holds
            ref, 1, "tone-suite", {"accuracy": 0.1}, False, request_id="eval-1"
        )
        with pytest.raises(mint.InvalidArgument, match="'eval-1' was already used"):
            client.record_evaluation(  # another suite is another command
                ref, 1, "other-suite", {"accuracy": 0.1}, False, request_id="eval-1"
            )
        with pytest.raises(mint.FailedPrecondition, match="tone-suite"):
            client.promote(ref, "stable", 2)  # never evaluated
        promoted = client.promote(ref, "stable", 1)
        evaluations = client.get_revision(ref, 1).evaluations

    assert not first.duplicate and again.duplicate
    assert (again.first_version, again.last_version) == (first.first_version, first.last_version)
    assert evaluations == (Evaluation(1, "tone-suite", {"accuracy": 0.9}, "", "alice", True),)
    assert promoted.adapter.channels == {"stable": 1, "latest": 2}
    assert promoted.adapter.gates == {"stable": "tone-suite"}
    assert promoted.adapter.gate_rules == {"stable": Gate("tone-suite", "any")}


def test_a_list_walks_every_page_once(world: ClientWorld) -> None:
    names = [f"acme/listed-{i}" for i in range(5)]
    with world.client() as client:
        for name in names:
            client.create_adapter(name, world.fingerprint, labels={"batch": "listed"})
        client.create_adapter("acme/listed-other", world.fingerprint, labels={"batch": "no"})
        world.project()
        first = client.list_page("acme", labels={"batch": "listed"}, page_size=2)
        listed = list(client.list_adapters("acme", labels={"batch": "listed"}, page_size=2))
    # A filtered page reads a bounded number of entries: it may come back short, even
    # empty, with a cursor to go on from (the world's tenant holds other adapters too).
    assert len(first.adapters) <= 2 and first.next_page_token
    assert [summary.ref for summary in listed] == names
    assert {s.base_fingerprint for s in listed} == {world.fingerprint}


def test_a_watch_yields_the_tenants_events_and_resumes_from_its_offsets(
    world: ClientWorld,
) -> None:
    ref = "acme/watched"
    with world.client() as client, world.client(EVE) as eve:
        client.create_adapter(ref, world.fingerprint, request_id="watch-create")
        with client.watch("acme") as watch:
            created = next(e for e in watch if e.stream_id == ref)
            offsets = watch.offsets
        client.set_gate(ref, "stable", "suite", request_id="watch-gate")
        with client.watch("acme", offsets) as later:
            following = next(e for e in later if e.stream_id == ref)
        with pytest.raises(mint.PermissionDenied), eve.watch("acme") as refused:
            next(refused)
    assert created.request_id == "watch-create" and isinstance(created.payload, AdapterCreated)
    assert offsets[created.partition] == created.offset + 1
    assert following.request_id == "watch-gate"  # the creation was not seen again
    assert following.payload == ChannelGateSet("stable", "suite")


def test_each_refusal_raises_its_exception_with_the_servers_message(world: ClientWorld) -> None:
    ref = "acme/refusals"
    (closed_port,) = free_ports(1)
    with (
        world.client() as alice,
        world.client(EVE) as eve,
        world.client("no-such-token") as stranger,
        mint.Client(f"127.0.0.1:{closed_port}", token="t", retry_for_s=0) as nowhere,
    ):
        alice.create_adapter(ref, world.fingerprint)
        calls = {
            mint.NotFound: lambda: alice.get_adapter("acme/missing"),
            mint.AlreadyExists: lambda: alice.create_adapter(ref, world.fingerprint),
            mint.Conflict: lambda: alice.set_gate(ref, "stable", "s", expected_version=99),
            mint.PermissionDenied: lambda: eve.get_adapter(ref),
            mint.Unauthenticated: lambda: stranger.get_adapter(ref),
            mint.InvalidArgument: lambda: alice.create_adapter("acme/Not A Name", "0" * 64),
            mint.ResourceExhausted: lambda: alice.publish_revision(
                ref, (b"{}", b"0" * (UPLOAD_LIMIT + 1))
            ),
            mint.Unavailable: lambda: nowhere.get_adapter(ref),
        }
        raised = {}
        for expected, call in calls.items():
            with pytest.raises(expected) as caught:
                call()
            raised[expected] = caught.value
    assert raised[mint.NotFound].message == "adapter acme/missing does not exist"
    assert "already exists" in raised[mint.AlreadyExists].message
    assert raised[mint.Conflict].message.startswith(f"{ref} is at version 1, not 99")
    assert "may not act in tenant 'acme'" in raised[mint.PermissionDenied].message
    assert "unknown or revoked token" in raised[mint.Unauthenticated].message
    assert "adapter name" in raised[mint.InvalidArgument].message
    assert "exceeds the limit" in raised[mint.ResourceExhausted].message
    for error in raised.values():
        assert isinstance(error, mint.MintError) and error.code == type(error).code
    assert raised[mint.AlreadyExists].request_id  # a command's error names its request id
    assert raised[mint.Unavailable].retryable and not raised[mint.NotFound].retryable


def test_generation_streams_the_tokens_a_whole_generation_gives(
    world: ClientWorld, served: Served
) -> None:
    sampling = Sampling(max_new_tokens=8)
    with world.client() as client, world.client(EVE) as eve:
        client.create_adapter("acme/cold", world.fingerprint)
        client.publish_revision("acme/cold", world.lora("cold", seed=6))
        world.project()
        with pytest.raises(mint.DeadlineExceeded) as late:
            client.generate("hello", "acme/cold", timeout_s=0.5)  # placed only after that
        whole = client.generate("hello", f"{served.ref}@1", sampling)
        chunks = list(client.generate_stream("hello", f"{served.ref}@stable", sampling))
        scored = client.score("hello", " world", Selector(served.ref, revision=1))
        bare = client.generate("hello", sampling=sampling)
        with pytest.raises(mint.NotFound):
            client.generate("hello", "acme/never-made@stable")
        with pytest.raises(mint.PermissionDenied):
            eve.generate("hello", served.ref)
        with pytest.raises(mint.InvalidArgument, match="max_new_tokens"):
            client.generate("hello", served.ref, Sampling(max_new_tokens=100_000))
    assert [t for c in chunks for t in c.tokens] == list(whole.tokens)
    assert "".join(c.text for c in chunks) == whole.text
    (one,) = whole.adapters
    assert one.weights_sha256 and one.log_offset is not None  # its revision event's place
    resolved = (ResolvedAdapter(served.ref, served.adapter_id, 1, 1.0, *astuple(one)[4:]),)
    assert whole.adapters == chunks[0].adapters == scored.adapters == resolved
    made = [whole.provenance, chunks[-1].provenance, scored.provenance]
    assert all(p is not None and p.adapters == resolved for p in made)
    assert len({p.response_id for p in made if p}) == 3
    assert whole.node == chunks[0].node == NODE and len(whole.tokens) == 8
    assert bare.adapters == () and bare.tokens != whole.tokens  # the adapter changes output
    assert len(scored.token_logprobs) == len(b" world")  # a token per byte
    assert scored.total_logprob == pytest.approx(sum(scored.token_logprobs), rel=1e-5)
    assert late.value.retryable


def test_an_update_request_goes_in_as_an_event_naming_its_examples(world: ClientWorld) -> None:
    ref = "acme/updated"
    examples = [{"prompt": "Greet me: ", "completion": "Ahoy!"}]
    with world.client() as client:
        client.create_adapter(ref, world.fingerprint)
        asked = client.request_update(ref, examples, request_id="u-sync")
        again = client.request_update(ref, examples, request_id="u-sync")
        with pytest.raises(mint.InvalidArgument, match="non-empty list") as refused:
            client.request_update(ref, [], request_id="u-empty")
        ((request_id, requested),) = [
            (e.request_id, e.payload)
            for e in client.history(ref)
            if isinstance(e.payload, UpdateRequested)
        ]

    async def asynchronously() -> str:
        async with mint.AsyncClient(world.registry, token="alice-token") as aio:
            sent = await aio.request_update(
                ref, b'{"examples": [{"prompt": "a", "completion": "b"}]}'
            )
            return sent.request_id

    async_id = asyncio.run(asynchronously())
    assert again.duplicate and not asked.duplicate and refused.value.request_id == "u-empty"
    assert request_id == "u-sync" and requested.update_id == "u-sync"
    digest = hashlib.sha256(build.examples_bytes(examples)).hexdigest()
    assert requested.examples_sha256 == digest
    with world.client() as client:
        last = client.history(ref)[-1].payload
    assert isinstance(last, UpdateRequested) and last.update_id == async_id
