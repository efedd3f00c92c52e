"""The trainer's parts without servers: how the registry's refusals reach the update
loop (what holds an update, what is retried, what stops the trainer), and its metrics."""

from __future__ import annotations

import pytest

from mint.client import errors as client_errors
from mint.domain import errors
from streams.trainer.metrics import TrainerMetrics
from streams.trainer.registry_port import as_domain_errors


@pytest.mark.parametrize(
    ("raised", "becomes"),
    [
        (client_errors.FailedPrecondition, errors.FailedPrecondition),  # a gate: held
        (client_errors.NotFound, errors.NotFound),
        (client_errors.InvalidArgument, errors.InvalidArgument),
        (client_errors.Unavailable, errors.Unavailable),  # delivered again later
        (client_errors.DeadlineExceeded, errors.Unavailable),
        (client_errors.Conflict, errors.Unavailable),
    ],
)
def test_client_errors_become_the_domains(
    raised: type[client_errors.MintError], becomes: type[errors.DomainError]
) -> None:
    with pytest.raises(becomes, match="why"), as_domain_errors():
        raise raised("why")


def test_a_bad_token_is_neither_held_nor_retried() -> None:
    with pytest.raises(client_errors.Unauthenticated), as_domain_errors():
        raise client_errors.Unauthenticated("token unknown")


def test_metrics_count_outcomes_and_say_when_degraded() -> None:
    metrics = TrainerMetrics()
    metrics.applied("promoted", 1.5)
    metrics.applied("held", 0.5)
    metrics.degraded("Unavailable: registry")
    text = metrics.render()
    assert 'mint_trainer_updates_total{outcome="promoted"} 1' in text
    assert 'mint_trainer_updates_total{outcome="held"} 1' in text
    assert "mint_trainer_update_seconds_total 2.000" in text
    assert "mint_trainer_degraded 1" in text and metrics.problem() == (
        "degraded: Unavailable: registry"
    )
    metrics.recovered()
    assert metrics.problem() is None and "mint_trainer_degraded 0" in metrics.render()
