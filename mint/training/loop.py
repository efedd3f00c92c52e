"""The update loop's stages, each done at most once per update however often the request
is delivered: train → publish (revision n+1, full provenance) → evaluate (the user's
examples scored on the serving path) → promote (the channel's gate decides) → finish.

Which stages are done is read from the adapter's state each time, never kept here: a
revision whose training run names the request means trained and published; its
evaluation of `SUITE` means evaluated. Every command's request id is the update's id and
the stage, so a stage cut short by a crash and done again appends nothing twice.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn
from transformers import PreTrainedModel

from mint.blobs.port import BlobStore
from mint.domain.errors import (
    Erased,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from mint.domain.events import Provenance
from mint.eventlog.port import Checkpoint, EventLog, next_checkpoint
from mint.serving.requests import RevisionRef
from mint.tokenizer import byte_tokenizer
from mint.validation.examples import parse_examples

from .port import AdapterView, RevisionView, UpdateJob, UpdateRegistry, job_of
from .scoring import Scorer
from .tuning import (
    Hyperparameters,
    Parent,
    Tokenize,
    Tokenized,
    tokenized,
    tool_versions,
    train_revision,
)

log = logging.getLogger(__name__)

SUITE = "user-examples"  # what a channel's gate names to let updates through
STAGES = ("train", "publish", "evaluate", "promote", "finish")
# Errors no retry can mend: the update is finished as held, with the message as reason.
PERMANENT = (InvalidArgument, NotFound, FailedPrecondition, PermissionDenied)
OnStage = Callable[[UpdateJob, str], None]
SKIPPED = "skipped"  # the adapter was erased: nothing may follow its tombstone


@dataclass(frozen=True)
class UpdateResult:
    update_id: str
    revision: int  # 0: none was made
    outcome: str  # "promoted" or "held"
    reason: str
    metrics: dict[str, float]


def log_stage(job: UpdateJob, stage: str) -> None:
    log.info("update %s of %s: %s", job.request.update_id, job.ref, stage)


class UpdateLoop:
    def __init__(
        self,
        registry: UpdateRegistry,
        blobs: BlobStore,
        train_base: nn.Module,
        scorer: Scorer,
        tokenize: Tokenize,
        hyperparameters: Hyperparameters | None = None,
        on_stage: OnStage = log_stage,
    ) -> None:
        """`train_base` and the scorer's base are two copies of one base (training wraps
        its own in PEFT layers for the run; scoring keeps packed slots in its)."""
        self.registry, self.blobs, self.scorer = registry, blobs, scorer
        self.train_base, self.tokenize = train_base, tokenize
        self.hp = hyperparameters or Hyperparameters()
        self.on_stage = on_stage
        self.base_fingerprint = scorer.engine.base_fingerprint

    def apply(self, job: UpdateJob) -> UpdateResult:
        """Every stage not done yet. Transient failures (Unavailable) propagate: deliver
        the request again later. Permanent ones finish the update as held."""
        try:
            return self._stages(job)
        except PERMANENT as exc:
            if isinstance(exc, Erased) or self._erased(job):  # erased while it ran
                return self._skipped(job)
            reason = f"{type(exc).__name__}: {exc}"
            log.warning("update %s of %s held: %s", job.request.update_id, job.ref, reason)
            self.on_stage(job, "finish")
            self.registry.finish(
                job.ref, job.request.update_id, 0, "held", reason, job.stage_request_id("finish")
            )
            return UpdateResult(job.request.update_id, 0, "held", reason, {})

    def _erased(self, job: UpdateJob) -> bool:
        """Whether the adapter is erased now (over gRPC an erasure is FAILED_PRECONDITION,
        like any other refusal: the state tells them apart)."""
        try:
            return self.registry.view(job.ref).erased
        except PERMANENT:
            return False

    def _skipped(self, job: UpdateJob) -> UpdateResult:
        """An erased adapter's update: dropped, its examples and weights gone with it."""
        log.info("update %s of %s skipped: the adapter is erased", job.request.update_id, job.ref)
        return UpdateResult(job.request.update_id, 0, SKIPPED, "the adapter is erased", {})

    def _stages(self, job: UpdateJob) -> UpdateResult:
        view = self.registry.view(job.ref)
        if view.erased:
            return self._skipped(job)
        if view.base_fingerprint != self.base_fingerprint:
            raise FailedPrecondition(
                f"{job.ref} is bound to base {view.base_fingerprint[:12]}…; this trainer "
                f"serves {self.base_fingerprint[:12]}…"
            )
        examples = parse_examples(
            self.blobs.get(view.adapter_id, job.request.examples_sha256), job.request.kind
        )
        pairs = tokenized(examples.learnt(), self.tokenize, self.hp.max_tokens)
        made = view.made_by(job.run_id)
        if made is None:
            view, made = self._train_and_publish(job, view, pairs, examples.sha256)
        passed, metrics = made.evaluations.get(SUITE) or self._evaluate(
            job, view, made, pairs, examples.sha256
        )
        loss, parent_loss = metrics.get("loss", math.nan), metrics.get("parent_loss", math.nan)
        outcome = "held"
        reason = f"loss {loss:.4f} on the examples is no better than the parent's {parent_loss:.4f}"
        if passed:
            self.on_stage(job, "promote")
            try:
                self.registry.promote(
                    job.ref,
                    job.request.channel,
                    made.number,
                    f"update {job.request.update_id}",
                    job.stage_request_id("promote"),
                )
                outcome, reason = "promoted", f"loss {parent_loss:.4f} → {loss:.4f}"
            except FailedPrecondition as exc:  # the channel's gate holds it
                reason = str(exc)
        self.on_stage(job, "finish")
        self.registry.finish(
            job.ref,
            job.request.update_id,
            made.number,
            outcome,
            reason,
            job.stage_request_id("finish"),
        )
        return UpdateResult(job.request.update_id, made.number, outcome, reason, dict(metrics))

    def _train_and_publish(
        self, job: UpdateJob, view: AdapterView, pairs: list[Tokenized], dataset: str
    ) -> tuple[AdapterView, RevisionView]:
        parent = view.latest()
        self.on_stage(job, "train")
        warm = (
            Parent(parent.config_json, self.blobs.get(view.adapter_id, parent.weights_sha256))
            if parent
            else None
        )
        upload = train_revision(self.train_base, warm, pairs, self.hp)
        self.on_stage(job, "publish")
        provenance = Provenance(
            principal="",  # the registry records the authenticated caller
            training_run_id=job.run_id,
            dataset_fingerprints=(dataset,),
            hyperparameters={
                **self.hp.recorded(),
                "kind": job.request.kind,
                "examples": str(len(pairs)),
            },
            tool_versions=tool_versions(),
        )
        parents = (parent.number,) if parent else ()
        number = self.registry.publish(
            job.ref, upload, parents, provenance, job.stage_request_id("publish")
        )
        view = self.registry.view(job.ref)
        return view, view.revisions[number - 1]

    def _evaluate(
        self,
        job: UpdateJob,
        view: AdapterView,
        made: RevisionView,
        pairs: list[Tokenized],
        dataset: str,
    ) -> tuple[bool, dict[str, float]]:
        self.on_stage(job, "evaluate")
        loss = self._loss(job, view, made, pairs)
        parent = view.parent_of(made)
        parent_loss = self._loss(job, view, parent, pairs)
        metrics = {"loss": loss, "parent_loss": parent_loss, "examples": float(len(pairs))}
        passed = loss < parent_loss
        self.registry.record_evaluation(
            job.ref, made.number, SUITE, metrics, passed, dataset, job.stage_request_id("evaluate")
        )
        return passed, metrics

    def _loss(
        self,
        job: UpdateJob,
        view: AdapterView,
        revision: RevisionView | None,
        pairs: list[Tokenized],
    ) -> float:
        if revision is None:
            return self.scorer.loss(None, b"", pairs)
        weights = self.blobs.get(view.adapter_id, revision.weights_sha256)
        ref = RevisionRef(
            view.adapter_id,
            str(job.ref),
            revision.number,
            revision.weights_sha256,
            len(weights),
            self.base_fingerprint,
            revision.config_json,
        )
        return self.scorer.loss(ref, weights, pairs)


def build_loop(
    registry: UpdateRegistry,
    blobs: BlobStore,
    load_base: Callable[[], PreTrainedModel],
    base_fingerprint: str,
    hyperparameters: Hyperparameters | None = None,
    on_stage: OnStage = log_stage,
) -> UpdateLoop:
    """A loop over two copies of the base `load_base` makes (placed where they should
    run), whose fingerprint is `base_fingerprint`: one to train in, one in the scorer's
    packed slots; text as the byte tokenizer reads it, as the nodes do."""
    hp = hyperparameters or Hyperparameters()
    scorer = Scorer(load_base(), base_fingerprint, hp.targets)
    tokenizer = byte_tokenizer()

    def tokenize(text: str) -> list[int]:
        return list(tokenizer(text)["input_ids"])

    return UpdateLoop(registry, blobs, load_base(), scorer, tokenize, hp, on_stage)


def drain(
    event_log: EventLog, loop: UpdateLoop, after: Checkpoint | None = None
) -> tuple[list[UpdateResult], dict[int, int]]:
    """Apply every update request in the log after `after` (the embedded back end's
    stream processor: one pass, in log order); the results and the next checkpoint."""
    results, checkpoint = [], dict(after or {})
    for recorded in event_log.read_all(after):
        job = job_of(recorded)
        if job is not None:
            results.append(loop.apply(job))
        checkpoint = next_checkpoint(checkpoint, recorded)
    return results, checkpoint
