"""`Client`: MinT's registry and the router's inference API, blocking, with typed results
and typed exceptions (`mint.client.errors`).

    with mint.Client("127.0.0.1:50051", router="127.0.0.1:50060", token="...") as client:
        client.create_adapter("acme/tone", base.fingerprint)
        client.publish_revision("acme/tone", "my-lora")       # a PEFT folder
        client.promote("acme/tone", "stable", 1)
        print(client.generate("Hello", "acme/tone@stable").text)

Every command takes an optional `request_id` (a fresh one otherwise) and is retried with
it on UNAVAILABLE and DEADLINE_EXCEEDED for `retry_for_s`, across the registry's replicas
(`RegistryClient`), so it is applied at most once; its result and its error carry the id.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

from mint.eventlog.port import Recorded
from mint.rpc.tls import TlsFiles
from mint.v1 import inference_pb2_grpc

from . import build, read
from .build import Adapters, Progress, PublishSource, UpdateExamples
from .channels import open_channel, router_options
from .errors import raising_mint_errors
from .registry import RegistryClient
from .retry import bearer, new_request_id
from .rollback import rollback_target
from .types import (
    Adapter,
    AdapterSummary,
    BaseModel,
    CommandResult,
    Event,
    Generation,
    GenerationChunk,
    Page,
    Revision,
    Sampling,
    Score,
)
from .watch import Watch, scan


class Client:
    """`registry`: the registry's address, or several replicas' ("a:50051,b:50051");
    `router`: the router's (for `generate`, `generate_stream` and `score`). Either may be
    left out when its calls are not used. `tls`: verify the servers against its CA (and
    present its certificate, if it holds one); `server_name` / `router_server_name`: the
    name a server's certificate carries when it is not the host dialled (a port-forward).
    `timeout_s` bounds each attempt, `retry_for_s` a command's retries."""

    def __init__(
        self,
        registry: str | None = None,
        *,
        router: str | None = None,
        token: str,
        timeout_s: float = 30.0,
        retry_for_s: float = 30.0,
        tls: TlsFiles | None = None,
        server_name: str | None = None,
        router_server_name: str | None = None,
    ) -> None:
        self._registry = (
            RegistryClient(registry, token, timeout_s, retry_for_s, tls, server_name)
            if registry
            else None
        )
        self._router = (
            open_channel(router, tls, router_options(router_server_name)) if router else None
        )
        self._inference_stub = (
            inference_pb2_grpc.InferenceStub(self._router) if self._router else None
        )
        self.timeout_s, self.retry_for_s = timeout_s, retry_for_s
        self._metadata = bearer(token)

    def close(self) -> None:
        if self._registry is not None:
            self._registry.close()
        if self._router is not None:
            self._router.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @property
    def registry(self) -> RegistryClient:
        """The protobuf-level client underneath (raw messages, `grpc.RpcError`)."""
        if self._registry is None:
            raise ValueError("this client has no registry: pass registry='HOST:PORT'")
        return self._registry

    @property
    def _inference(self) -> inference_pb2_grpc.InferenceStub:
        if self._inference_stub is None:
            raise ValueError("this client has no router: pass router='HOST:PORT'")
        return self._inference_stub

    # --- commands ------------------------------------------------------------------------

    def register_base(
        self,
        name: str,
        fingerprint: str,
        parameters: Mapping[str, Sequence[int]],
        *,
        request_id: str | None = None,
    ) -> BaseModel:
        """Admins only. Idempotent by fingerprint: registering it again returns the first
        registration. `mint.client.describe_base(DIR)` computes both from a model folder."""
        rid = request_id or new_request_id()
        with raising_mint_errors(rid):
            return read.base_model(self.registry.register_base(name, fingerprint, parameters, rid))

    def create_adapter(
        self,
        ref: str,
        base_fingerprint: str,
        *,
        labels: Mapping[str, str] | None = None,
        request_id: str | None = None,
    ) -> CommandResult:
        rid = request_id or new_request_id()
        with raising_mint_errors(rid):
            answer = self.registry.create_adapter(ref, base_fingerprint, labels, rid)
        return read.command_result(answer, rid)

    def publish_revision(
        self,
        ref: str,
        source: PublishSource,
        *,
        parents: Sequence[int] = (),
        training_run_id: str = "",
        dataset_fingerprints: Sequence[str] = (),
        hyperparameters: Mapping[str, str] | None = None,
        tool_versions: Mapping[str, str] | None = None,
        expected_version: int | None = None,
        progress: Progress | None = None,
        request_id: str | None = None,
    ) -> CommandResult:
        """Upload a revision: a PEFT `save_pretrained` folder, or (adapter_config.json
        bytes, adapter_model.safetensors bytes). Its number is the new last revision's.
        `progress(sent, total)` follows the weights going out."""
        rid = request_id or new_request_id()
        with raising_mint_errors(rid):
            answer = self.registry.publish_revision(
                ref,
                source,
                expected_version,
                rid,
                progress,
                parents=list(parents),
                training_run_id=training_run_id,
                dataset_fingerprints=list(dataset_fingerprints),
                hyperparameters=dict(hyperparameters or {}),
                tool_versions=dict(tool_versions or {}),
            )
        return read.command_result(answer, rid)

    def record_evaluation(
        self,
        ref: str,
        revision: int,
        suite: str,
        metrics: Mapping[str, float],
        passed: bool,
        *,
        dataset_fingerprint: str = "",
        expected_version: int | None = None,
        request_id: str | None = None,
    ) -> CommandResult:
        rid = request_id or new_request_id()
        with raising_mint_errors(rid):
            answer = self.registry.record_evaluation(
                ref, revision, suite, metrics, passed, rid, dataset_fingerprint, expected_version
            )
        return read.command_result(answer, rid)

    def set_gate(
        self,
        ref: str,
        channel: str,
        required_suite: str,
        *,
        expected_version: int | None = None,
        request_id: str | None = None,
        requirement: str = "",
        threshold: float = 0.0,
        examples: bytes = b"",
    ) -> CommandResult:
        """Only revisions that passed `required_suite` may go to `channel` ("": no gate),
        by an evaluation `requirement` accepts: "any" (default), "four_eyes" (recorded by
        someone other than who promotes) or "platform" (the platform's evaluator scores
        `examples`, JSON lines of {"prompt", "continuation"}, against `threshold`, the
        least mean log-prob per continuation token)."""
        rid = request_id or new_request_id()
        with raising_mint_errors(rid):
            answer = self.registry.set_gate(
                ref,
                channel,
                required_suite,
                expected_version,
                rid,
                requirement,
                threshold,
                examples,
            )
        return read.command_result(answer, rid)

    def promote(
        self,
        ref: str,
        channel: str,
        revision: int,
        *,
        reason: str = "",
        expected_version: int | None = None,
        request_id: str | None = None,
    ) -> CommandResult:
        """Point `channel` at `revision` (any revision: forward or back)."""
        rid = request_id or new_request_id()
        with raising_mint_errors(rid):
            answer = self.registry.move_channel(
                ref, channel, revision, reason, expected_version, rid
            )
        return read.command_result(answer, rid)

    def request_update(
        self,
        ref: str,
        examples: UpdateExamples,
        *,
        kind: str = "examples",
        channel: str = "stable",
        request_id: str | None = None,
    ) -> CommandResult:
        """Ask for `ref` to be updated from `examples` (JSON bytes, or objects with a
        "prompt" and a "completion"; feedback's carry a "rating" of 1 or -1). The
        trainer trains revision n+1 from them, evaluates it and promotes it to `channel`
        if it passes the gate; `request_id` is the update's id, which its revision's
        provenance names."""
        rid = request_id or new_request_id()
        with raising_mint_errors(rid):
            answer = self.registry.request_update(ref, examples, kind, channel, rid)
        return read.command_result(answer, rid)

    def rollback(
        self,
        ref: str,
        channel: str,
        revision: int | None = None,
        *,
        reason: str = "rollback",
        request_id: str | None = None,
    ) -> CommandResult:
        """Point `channel` back at `revision`, by default where it pointed before its last
        move. That default is read from the history and the move made only if nothing
        changed meanwhile (else `Conflict`)."""
        expected = None
        if revision is None:
            revision, expected = rollback_target(ref, channel, self.history(ref), request_id)
        return self.promote(
            ref,
            channel,
            revision,
            reason=reason,
            expected_version=expected,
            request_id=request_id,
        )

    def archive(
        self,
        ref: str,
        *,
        reason: str = "",
        expected_version: int | None = None,
        request_id: str | None = None,
    ) -> CommandResult:
        """No more revisions or moves; its history and revisions stay readable."""
        rid = request_id or new_request_id()
        with raising_mint_errors(rid):
            answer = self.registry.archive_adapter(ref, reason, expected_version, rid)
        return read.command_result(answer, rid)

    def erase(
        self, ref: str, *, expected_version: int | None = None, request_id: str | None = None
    ) -> CommandResult:
        """Erase for good: the log keeps who erased it and when, not its weights (their data
        key is destroyed, every copy and the projection deleted, every node drops it).
        Erasing an erased adapter changes nothing; later calls for it get FailedPrecondition
        ("... was erased at ...")."""
        rid = request_id or new_request_id()
        with raising_mint_errors(rid):
            answer = self.registry.erase_adapter(ref, expected_version, rid)
        return read.command_result(answer, rid)

    # --- reads ---------------------------------------------------------------------------

    def get_adapter(self, ref: str) -> Adapter:
        with raising_mint_errors():
            return read.adapter(self.registry.get_adapter(ref))

    def get_revision(self, ref: str, at: int | str) -> Revision:
        """A revision by number, or the one a channel points at (`at="stable"`)."""
        revision, channel = (at, "") if isinstance(at, int) else (0, at)
        with raising_mint_errors():
            return read.revision(self.registry.get_revision(ref, revision, channel))

    def list_adapters(
        self, tenant: str, *, labels: Mapping[str, str] | None = None, page_size: int = 100
    ) -> Iterator[AdapterSummary]:
        """Every adapter of `tenant` carrying `labels`, in name order, a page at a time."""
        token = ""
        while True:
            page = self.list_page(tenant, labels=labels, page_size=page_size, page_token=token)
            yield from page.adapters
            token = page.next_page_token
            if not token:
                return

    def list_page(
        self,
        tenant: str,
        *,
        labels: Mapping[str, str] | None = None,
        page_size: int = 100,
        page_token: str = "",
    ) -> Page:
        """One page, the first or the one after `page_token` (a page's next_page_token)."""
        with raising_mint_errors():
            return read.page(self.registry.list_page(tenant, labels, page_size, page_token))

    def history(self, ref: str) -> list[Event]:
        """Every event of the adapter, oldest first."""
        with raising_mint_errors():
            return [read.event(e) for e in self.registry.history(ref)]

    def watch(self, tenant: str, from_offsets: Mapping[int, int] | None = None) -> Watch:
        """`tenant`'s events from `from_offsets` (partition -> next offset; None: from the
        beginning) on, as they are appended: iterate it, `close()` it to stop."""
        registry = self.registry
        return Watch(
            lambda offsets: registry.watch_events(tenant, offsets), from_offsets, self.retry_for_s
        )

    def scan(self, tenant: str) -> Iterator[Recorded]:
        """`tenant`'s events as stored, oldest first per partition, up to the log's end as of
        the call: each envelope whole, so its hash chain can be checked here (`mint audit`,
        with `mint.audit`'s verify, replay and provenance). Closing it stops the stream."""
        registry = self.registry
        return scan(
            lambda offsets: registry.watch_events(tenant, offsets, until_end=True),
            self.retry_for_s,
        )

    # --- inference (through the router) ---------------------------------------------------

    def generate(
        self,
        prompt: str,
        adapters: Adapters = (),
        sampling: Sampling | None = None,
        *,
        timeout_s: float | None = None,
    ) -> Generation:
        """The completion of `prompt` through `adapters` ("acme/tone@stable", a
        `Selector`, or a list of them to stack; none: the bare base)."""
        request = build.generate_request(prompt, adapters, sampling)
        with raising_mint_errors():
            answer = self._inference.Generate(
                request, metadata=self._metadata, timeout=timeout_s or self.timeout_s
            )
        return read.generation(answer)

    def generate_stream(
        self,
        prompt: str,
        adapters: Adapters = (),
        sampling: Sampling | None = None,
        *,
        timeout_s: float | None = None,
    ) -> Iterator[GenerationChunk]:
        """The completion as it decodes; leaving the loop early cancels the generation."""
        request = build.generate_request(prompt, adapters, sampling)
        call = self._inference.GenerateStream(
            request, metadata=self._metadata, timeout=timeout_s or self.timeout_s
        )
        try:
            with raising_mint_errors():
                for message in call:
                    yield read.chunk(message)
        finally:
            call.cancel()  # nothing if it ended

    def score(
        self,
        prompt: str,
        continuation: str,
        adapters: Adapters = (),
        *,
        timeout_s: float | None = None,
    ) -> Score:
        """Log-probabilities of `continuation`'s tokens after `prompt`."""
        request = build.score_request(prompt, continuation, adapters)
        with raising_mint_errors():
            answer = self._inference.Score(
                request, metadata=self._metadata, timeout=timeout_s or self.timeout_s
            )
        return read.score(answer)
