"""`mint.AsyncClient` against the same servers: the core path of an adapter, its typed
errors, a watch and generation streamed through the router, all awaited on one loop."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import mint
from mint.audit.verify import verify
from mint.client import Sampling
from mint.domain.events import AdapterCreated
from mint.models.base import build_base
from tests.serving.world import base_config

from .conftest import ADMIN, EVE, ClientWorld, Served


def test_the_async_client_walks_an_adapters_life(world: ClientWorld) -> None:
    ref = "acme/async-life"

    async def scenario() -> None:
        async with (
            mint.AsyncClient(world.registry, token="alice-token") as client,
            mint.AsyncClient(world.registry, token=EVE) as eve,
        ):
            created = await client.create_adapter(ref, world.fingerprint, request_id="a-create")
            again = await client.create_adapter(ref, world.fingerprint, request_id="a-create")
            assert again.duplicate and again.adapter.adapter_id == created.adapter.adapter_id
            folder = world.lora("async-1", seed=7)
            sent: list[int] = []
            await client.publish_revision(ref, folder, progress=lambda done, _: sent.append(done))
            await client.publish_revision(ref, world.lora("async-2", seed=8))
            evaluated = await client.record_evaluation(ref, 2, "suite", {"f1": 0.5}, True)
            await client.set_gate(ref, "stable", "suite")
            await client.promote(ref, "stable", 2)
            with pytest.raises(mint.FailedPrecondition, match="unset before its last move"):
                await client.rollback(ref, "stable")  # stable was unset before
            with pytest.raises(mint.Conflict):
                await client.promote(ref, "stable", 2, expected_version=1)
            with pytest.raises(mint.NotFound):
                await client.get_revision(ref, 3)
            with pytest.raises(mint.PermissionDenied):
                await eve.get_adapter(ref)
            archived = await client.archive(ref, reason="done")
            adapter = await client.get_adapter(ref)
            stable = await client.get_revision(ref, "stable")
            events = await client.history(ref)
            await asyncio.to_thread(world.project)
            listed = [a.ref async for a in client.list_adapters("acme", page_size=1)]
            async with client.watch("acme") as watch:
                first = await anext(e async for e in watch if e.stream_id == ref)
            scanned = [r async for r in client.scan("acme") if r.envelope.stream_id == ref]

        assert sent and evaluated.request_id and archived.adapter.archived
        assert adapter.archived and adapter.channels == {"latest": 2, "stable": 2}
        assert stable.number == 2 and stable.evaluations[0].metrics == {"f1": 0.5}
        assert events[-1].stream_version == adapter.version and len(events) == adapter.version
        assert ref in listed and listed == sorted(listed)
        assert first.request_id == "a-create" and isinstance(first.payload, AdapterCreated)
        assert [r.envelope.stream_version for r in scanned] == list(range(1, adapter.version + 1))
        assert not verify(scanned).problems  # as stored: the chain holds

    asyncio.run(scenario())


def test_the_async_client_streams_a_generation_through_the_router(
    world: ClientWorld, served: Served
) -> None:
    sampling = Sampling(max_new_tokens=8)

    async def scenario() -> None:
        async with mint.AsyncClient(router=world.router, token="alice-token") as client:
            whole = await client.generate("hello", f"{served.ref}@stable", sampling)
            chunks = [c async for c in client.generate_stream("hello", served.ref, sampling)]
            scored = await client.score("hello", " world", f"{served.ref}@1")
            with pytest.raises(mint.NotFound):
                await client.generate("hello", "acme/never-made")
            with pytest.raises(ValueError, match="no registry"):
                await client.get_adapter(served.ref)
        assert [t for c in chunks for t in c.tokens] == list(whole.tokens)
        assert chunks[0].adapters == whole.adapters == scored.adapters
        assert whole.adapters[0].revision == 1 and len(whole.tokens) == 8

    asyncio.run(scenario())


def test_the_async_client_registers_lists_and_erases(world: ClientWorld, tmp_path: Path) -> None:
    folder = tmp_path / "tiny-base"
    build_base(base_config(), seed=0).save_pretrained(folder)  # the world's base
    parameters = mint.describe_base(folder).parameters
    erased_ref = "acme/async-erased"
    names = [f"acme/async-listed-{i}" for i in range(3)]

    async def scenario() -> None:
        async with (
            mint.AsyncClient(world.registry, token=ADMIN) as admin,
            mint.AsyncClient(world.registry, token="alice-token") as client,
        ):
            registered = await admin.register_base("again", world.fingerprint, parameters)
            with pytest.raises(mint.PermissionDenied):
                await client.register_base("mine", world.fingerprint, parameters)
            for name in names:
                await client.create_adapter(name, world.fingerprint, labels={"batch": "aio"})
            await client.create_adapter(erased_ref, world.fingerprint)
            erased = await client.erase(erased_ref, request_id="a-erase")
            again = await client.erase(erased_ref, request_id="a-erase-again")
            adapter = await client.get_adapter(erased_ref)
            await asyncio.to_thread(world.project)
            pages, token = [], ""
            while True:
                page = await client.list_page(
                    "acme", labels={"batch": "aio"}, page_size=2, page_token=token
                )
                pages.append([summary.ref for summary in page.adapters])
                if not (token := page.next_page_token):
                    break

        assert registered.name == "tiny" and registered.fingerprint == world.fingerprint
        assert erased.request_id == "a-erase" and not erased.duplicate
        assert again.duplicate and adapter.erased and adapter.erased_at
        assert all(len(page) <= 2 for page in pages) and len(pages) >= 2
        assert [ref for page in pages for ref in page] == names

    asyncio.run(scenario())
