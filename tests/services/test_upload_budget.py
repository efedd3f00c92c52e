"""The transfer budgets and the spooled receive, as pure units (the process-level checks of
memory and refusals are test_upload_memory.py and test_download_memory.py)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from mint.domain.errors import Cancelled, InvalidArgument, ResourceExhausted
from mint.v1 import registry_pb2 as pb
from services.registry.budget import DOWNLOADS, RETRY_AFTER_S, UPLOADS, ByteBudget
from services.registry.uploads import SPOOL_BYTES, receive_weights


def test_a_reservation_that_does_not_fit_now_is_refused_until_one_is_released() -> None:
    budget = ByteBudget(100, UPLOADS)
    with budget.reserve(60):
        with pytest.raises(ResourceExhausted, match="retry later"), budget.reserve(41):
            pass
        with budget.reserve(40):
            assert budget.held == 100
    with budget.reserve(100):
        assert budget.held == 100


def test_only_a_refusal_for_now_says_when_to_retry() -> None:
    """A client waits out a pushback and retries by itself; one that can never fit
    carries none, so it is not retried."""
    budget = ByteBudget(100, UPLOADS)
    with budget.reserve(60), pytest.raises(ResourceExhausted) as busy, budget.reserve(41):
        pass
    with pytest.raises(ResourceExhausted) as never, budget.reserve(101):
        pass
    assert (busy.value.retry_after_s, never.value.retry_after_s) == (RETRY_AFTER_S, None)


def test_a_failed_call_gives_its_bytes_back() -> None:
    budget = ByteBudget(100, UPLOADS)
    with pytest.raises(InvalidArgument), budget.reserve(70):
        raise InvalidArgument("the weights are not safetensors")
    assert budget.held == 0


def test_an_upload_larger_than_the_budget_is_told_it_can_never_fit() -> None:
    budget = ByteBudget(100, UPLOADS)
    with pytest.raises(ResourceExhausted, match="cannot be accepted here"), budget.reserve(101):
        pass
    assert budget.held == 0


def test_a_download_is_told_which_flag_bounds_it() -> None:
    budget = ByteBudget(100, DOWNLOADS)
    busy = pytest.raises(ResourceExhausted, match=r"downloads in flight .* retry later")
    with budget.reserve(60), busy, budget.reserve(41):
        pass
    never = pytest.raises(ResourceExhausted, match="--max-download-bytes-in-flight 100")
    with never, budget.reserve(101):
        pass
    assert budget.held == 0


def test_each_refusal_is_counted_and_nothing_else() -> None:
    refusals: list[None] = []
    budget = ByteBudget(100, UPLOADS, on_refused=lambda: refusals.append(None))
    with budget.reserve(60):
        for size in (41, 101):  # not now; never
            with pytest.raises(ResourceExhausted), budget.reserve(size):
                pass
        with budget.reserve(40):
            pass
    assert len(refusals) == 2


def chunks(*sizes: int) -> list[pb.PublishRevisionRequest]:
    return [pb.PublishRevisionRequest(weights_chunk=bytes([i]) * n) for i, n in enumerate(sizes)]


def test_the_body_comes_back_whole_from_the_spool() -> None:
    sizes = (SPOOL_BYTES, SPOOL_BYTES, 7)  # past the threshold: it went to a file
    weights = receive_weights(iter(chunks(*sizes)), sum(sizes))
    assert weights == b"".join(c.weights_chunk for c in chunks(*sizes))


def test_a_body_longer_than_declared_is_refused_at_the_chunk_that_passes_it() -> None:
    parts = iter(chunks(10, 10, 10))
    with pytest.raises(InvalidArgument, match="more weight bytes than the header's"):
        receive_weights(parts, 15)
    assert len(list(parts)) == 1, "the chunk after the one that passed was read"


class _CallerGone(grpc.RpcError):
    """What iterating a request stream raises once its caller cancelled."""


def test_a_caller_gone_mid_body_is_a_cancelled_upload_not_a_server_fault() -> None:
    """A server fault is logged as an error with its traceback; a caller that went away
    is not one."""

    def parts() -> Iterator[pb.PublishRevisionRequest]:
        yield from chunks(10)
        raise _CallerGone()

    with pytest.raises(Cancelled, match="nothing was stored"):
        receive_weights(parts(), 30)
