"""The update loop's registry port over gRPC (`mint.Client`), as the trainer's service
principal. Client errors become the domain's: a refusal the update cannot get past
(NotFound, InvalidArgument, FailedPrecondition) holds it; anything a retry can mend is
Unavailable (the runner delivers the request again later); a bad token stops the trainer."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from mint.client import Client
from mint.client import errors as client_errors
from mint.client.errors import raising_mint_errors
from mint.client.types import Adapter
from mint.domain import errors
from mint.domain.events import Provenance
from mint.domain.names import AdapterRef
from mint.registry import Upload
from mint.training.port import AdapterView, RevisionView

_PERMANENT: dict[type[client_errors.MintError], type[errors.DomainError]] = {
    client_errors.NotFound: errors.NotFound,
    client_errors.InvalidArgument: errors.InvalidArgument,
    client_errors.FailedPrecondition: errors.FailedPrecondition,
}
_TRANSIENT = (
    client_errors.Unavailable,
    client_errors.DeadlineExceeded,
    client_errors.ResourceExhausted,
    client_errors.Conflict,
)


@contextmanager
def as_domain_errors() -> Iterator[None]:
    try:
        yield
    except _TRANSIENT as exc:
        raise errors.Unavailable(f"registry: {exc}") from exc
    except tuple(_PERMANENT) as exc:
        raise _PERMANENT[type(exc)](exc.message) from exc


def _view(adapter: Adapter) -> AdapterView:
    return AdapterView(
        adapter.adapter_id,
        adapter.base_fingerprint,
        tuple(RevisionView.of(r) for r in adapter.revisions),
        dict(adapter.channels),
        adapter.archived,
        adapter.erased,
    )


class ClientRegistry:
    def __init__(self, client: Client) -> None:
        self.client = client

    def view(self, ref: AdapterRef) -> AdapterView:
        with as_domain_errors():
            return _view(self.client.get_adapter(str(ref)))

    def publish(
        self,
        ref: AdapterRef,
        upload: Upload,
        parents: tuple[int, ...],
        provenance: Provenance,
        request_id: str,
    ) -> int:
        with as_domain_errors():
            result = self.client.publish_revision(
                str(ref),
                (upload.config, upload.weights),
                parents=parents,
                training_run_id=provenance.training_run_id,
                dataset_fingerprints=provenance.dataset_fingerprints,
                hyperparameters=provenance.hyperparameters,
                tool_versions=provenance.tool_versions,
                request_id=request_id,
            )
        # A retry's answer is the state the first attempt made: its last revision.
        return result.adapter.revisions[-1].number

    def record_evaluation(
        self,
        ref: AdapterRef,
        revision: int,
        suite: str,
        metrics: Mapping[str, float],
        passed: bool,
        dataset_fingerprint: str,
        request_id: str,
    ) -> None:
        with as_domain_errors():
            self.client.record_evaluation(
                str(ref),
                revision,
                suite,
                metrics,
                passed,
                dataset_fingerprint=dataset_fingerprint,
                request_id=request_id,
            )

    def promote(
        self, ref: AdapterRef, channel: str, revision: int, reason: str, request_id: str
    ) -> None:
        with as_domain_errors():
            self.client.promote(str(ref), channel, revision, reason=reason, request_id=request_id)

    def finish(
        self,
        ref: AdapterRef,
        update_id: str,
        revision: int,
        outcome: str,
        reason: str,
        request_id: str,
    ) -> None:
        with as_domain_errors(), raising_mint_errors(request_id):
            self.client.registry.finish_update(
                str(ref), update_id, revision, outcome, reason, request_id
            )
