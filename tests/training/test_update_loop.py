"""The update loop in process, on the embedded back end (no servers): each update makes
one revision whose parents chain, whose provenance names its request and examples, which
is evaluated on the serving path and promoted or held by the gate; delivered again, or
cut short at any stage and resumed, it makes nothing twice."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from transformers import PreTrainedModel

from mint.backends.local_blobs import LocalBlobStore
from mint.backends.sqlite_log import SqliteEventLog
from mint.domain.events import UpdateFinished
from mint.domain.names import AdapterRef
from mint.models.base import build_base, fingerprint, tiny_llama_config
from mint.registry import Principal, Registry
from mint.training.loop import SKIPPED, STAGES, SUITE, UpdateLoop, build_loop, drain
from mint.training.port import LocalRegistry, UpdateJob, job_of
from mint.training.tuning import Hyperparameters
from tests.keys import TEST_KEK

ADMIN = Principal("ops", frozenset({"*"}), admin=True)
TRAINER = Principal("trainer", frozenset({"*"}), service=True)
ALICE = Principal("alice", frozenset({"acme"}))
REF = AdapterRef("acme", "tone")
HP = Hyperparameters(steps=4, learning_rate=2e-2, rank=4)


def examples(word: str) -> bytes:
    items = [{"prompt": f"say {word} {i}: ", "completion": f"{word}!"} for i in range(3)]
    return json.dumps({"examples": items}).encode()


class Crash(Exception):
    pass


@pytest.fixture(scope="module")
def base_model() -> PreTrainedModel:
    torch.set_num_threads(1)  # the machine is shared; tiny models gain nothing from more
    return build_base(tiny_llama_config(), seed=0)


@pytest.fixture
def world(tmp_path: Path, base_model: PreTrainedModel) -> tuple[Registry, UpdateLoop, list[str]]:
    registry = Registry(
        SqliteEventLog(tmp_path / "log.db"), LocalBlobStore(tmp_path / "blobs", TEST_KEK)
    )
    shapes = {k: tuple(v.shape) for k, v in base_model.state_dict().items()}
    registry.register_base(ADMIN, "tiny", fingerprint(base_model), shapes, "b1")
    registry.create_adapter(ALICE, REF, fingerprint(base_model), "c1")
    registry.set_gate(ALICE, REF, "stable", SUITE, "g1")
    stages: list[str] = []
    loop = build_loop(
        LocalRegistry(registry, TRAINER),
        registry.blobs,
        lambda: build_base(tiny_llama_config(), seed=0),
        fingerprint(build_base(tiny_llama_config(), seed=0)),
        HP,
        on_stage=lambda job, stage: stages.append(stage),
    )
    return registry, loop, stages


def _jobs(registry: Registry) -> list[UpdateJob]:
    return [j for r in registry.log.read_all() if (j := job_of(r)) is not None]


def test_updates_chain_revisions_with_provenance_and_promote(world) -> None:
    registry, loop, stages = world
    for n in range(2):
        registry.request_update(ALICE, REF, examples("yes"), f"u{n}")
    results, checkpoint = drain(registry.log, loop)
    assert [r.outcome for r in results] == ["promoted", "promoted"], results
    assert stages == [*STAGES] * 2
    adapter = registry.get(ALICE, REF)
    first, second = adapter.revisions
    assert (first.parents, second.parents) == ((), (1,))
    jobs = _jobs(registry)
    for revision, job in zip(adapter.revisions, jobs, strict=True):
        p = revision.provenance
        assert p.training_run_id == job.run_id and job.request.update_id in p.training_run_id
        assert p.dataset_fingerprints == (hashlib.sha256(examples("yes")).hexdigest(),)
        assert p.principal == "trainer" and p.hyperparameters["steps"] == "4"
        assert {"torch", "peft", "mint", "python"} <= set(p.tool_versions)
        (evaluation,) = revision.evaluations
        assert evaluation.passed and evaluation.metrics["loss"] < evaluation.metrics["parent_loss"]
    assert adapter.channels["stable"] == 2
    assert adapter.finished["u1"] == UpdateFinished(
        "u1", 2, "promoted", adapter.finished["u1"].reason
    )
    # Delivered again (a redelivery after a crash before the commit): nothing new.
    version = adapter.version
    assert drain(registry.log, loop)[0] == results
    assert registry.get(ALICE, REF).version == version
    assert drain(registry.log, loop, checkpoint)[0] == []


@pytest.mark.parametrize("crash_at", STAGES)
def test_an_update_cut_short_at_any_stage_resumes_without_doing_anything_twice(
    world, crash_at: str
) -> None:
    registry, loop, _ = world
    registry.request_update(ALICE, REF, examples("yes"), "u-crash")
    (job,) = _jobs(registry)

    def crash(job: UpdateJob, stage: str) -> None:
        if stage == crash_at:
            raise Crash(stage)

    loop.on_stage = crash
    with pytest.raises(Crash):
        loop.apply(job)
    loop.on_stage = lambda job, stage: None
    result = loop.apply(job)
    adapter = registry.get(ALICE, REF)
    assert len(adapter.revisions) == 1 and result.revision == 1
    assert len(adapter.revisions[0].evaluations) == 1
    assert adapter.finished["u-crash"].outcome == result.outcome == "promoted"
    types = [r.envelope.event_type.rsplit(".", 1)[1] for r in registry.history(ALICE, REF)]
    assert types.count("RevisionPublished") == 1 and types.count("UpdateFinished") == 1


def test_a_gate_that_wants_another_suite_holds_the_update(world) -> None:
    registry, loop, _ = world
    registry.set_gate(ALICE, REF, "canary", "human-review", "g2")
    registry.request_update(ALICE, REF, examples("no"), "u-held", channel="canary")
    (result,) = drain(registry.log, loop)[0]
    adapter = registry.get(ALICE, REF)
    assert result.outcome == "held" and "human-review" in result.reason
    assert "canary" not in adapter.channels and adapter.finished["u-held"].revision == 1


def test_an_adapter_on_another_base_is_held_without_training(world, tmp_path: Path) -> None:
    registry, loop, stages = world
    other = build_base(tiny_llama_config(), seed=1)
    shapes = {k: tuple(v.shape) for k, v in other.state_dict().items()}
    registry.register_base(ADMIN, "other", fingerprint(other), shapes, "b2")
    ref = AdapterRef("acme", "elsewhere")
    registry.create_adapter(ALICE, ref, fingerprint(other), "c2")
    registry.request_update(ALICE, ref, examples("x"), "u-other")
    (result,) = drain(registry.log, loop)[0]
    assert result.outcome == "held" and "base" in result.reason and "train" not in stages
    assert registry.get(ALICE, ref).revisions == ()


@pytest.mark.parametrize("erased_at", ["before", "train", "promote"])
def test_an_erased_adapters_update_is_skipped_and_appends_nothing(world, erased_at: str) -> None:
    """Nothing follows an erasure's tombstone: an update delivered after it, or whose
    adapter is erased while it runs (its examples and weights gone), is dropped."""
    registry, loop, _ = world
    registry.request_update(ALICE, REF, examples("yes"), "u-erased")
    (job,) = _jobs(registry)

    def erase(job: UpdateJob, stage: str) -> None:
        if stage == erased_at:
            registry.erase(ALICE, REF, "erase-1")

    if erased_at == "before":
        registry.erase(ALICE, REF, "erase-1")
    loop.on_stage = erase
    result = loop.apply(job)
    assert (result.outcome, result.revision) == (SKIPPED, 0), result
    adapter = registry.get(ALICE, REF)
    assert adapter.erased and adapter.finished == {}
    assert registry.history(ALICE, REF)[-1].envelope.event_type == "mint.v1.AdapterErased"
    assert drain(registry.log, loop)[0][0].outcome == SKIPPED  # delivered again: the same
