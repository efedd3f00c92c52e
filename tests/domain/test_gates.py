"""Gates with requirements: whose evaluation passes a gate (no servers)."""

from __future__ import annotations

import pytest

from mint.domain import adapter, gates
from mint.domain.errors import FailedPrecondition, InvalidArgument
from mint.domain.events import ChannelGateSet
from tests.domain.test_adapter import run, with_revisions

EXAMPLES = "e" * 64


def gated(requirement: str) -> adapter.Adapter:
    state = with_revisions(1)
    if requirement == gates.PLATFORM:
        events = adapter.set_gate(state, "stable", "safety", requirement, -2.5, EXAMPLES)
    else:
        events = adapter.set_gate(state, "stable", "safety", requirement)
    return run(state, events)


def evaluated(
    state: adapter.Adapter, by: str, passed: bool = True, platform: bool = False, data: str = ""
) -> adapter.Adapter:
    metrics = {gates.MEAN_LOGPROB: -1.0 if passed else -9.0, gates.THRESHOLD: -2.5}
    events = adapter.record_evaluation(state, 1, "safety", metrics, data, by, passed, platform)
    return run(state, events)


def test_a_self_recorded_evaluation_passes_an_any_gate_only() -> None:
    for requirement in (gates.ANY, gates.FOUR_EYES, gates.PLATFORM):
        state = evaluated(gated(requirement), by="alice")
        if requirement == gates.ANY:
            adapter.move_channel(state, "stable", 1, mover="alice")
            continue
        with pytest.raises(FailedPrecondition) as refused:
            adapter.move_channel(state, "stable", 1, mover="alice")
        message = str(refused.value)
        assert f"gate {requirement}" in message and "'stable'" in message
        assert "recorded by alice" in message  # what it has, and why that does not count


def test_four_eyes_takes_another_principals_latest_verdict() -> None:
    state = evaluated(gated(gates.FOUR_EYES), by="bob")
    adapter.move_channel(state, "stable", 1, mover="alice")
    with pytest.raises(FailedPrecondition, match="other than 'bob'"):
        adapter.move_channel(state, "stable", 1, mover="bob")  # bob evaluated it himself
    failing = evaluated(state, by="carol", passed=False)
    with pytest.raises(FailedPrecondition, match="a failing one"):
        adapter.move_channel(failing, "stable", 1, mover="alice")


def test_platform_gate_takes_only_platform_verdicts_on_its_examples() -> None:
    state = gated(gates.PLATFORM)
    # A platform evaluation of other examples (an older suite) does not count.
    stale = evaluated(state, by="evaluator", platform=True, data="f" * 64)
    with pytest.raises(FailedPrecondition, match="platform, other examples"):
        adapter.move_channel(stale, "stable", 1, mover="alice")
    failed = evaluated(stale, by="evaluator", passed=False, platform=True, data=EXAMPLES)
    with pytest.raises(FailedPrecondition, match=r"a failing one \(mean_token_logprob -9\)"):
        adapter.move_channel(failed, "stable", 1, mover="alice")
    passed = evaluated(failed, by="evaluator", platform=True, data=EXAMPLES)
    assert adapter.move_channel(passed, "stable", 1, mover="alice")


def test_gate_settings_are_checked() -> None:
    state = with_revisions(1)
    with pytest.raises(InvalidArgument, match="requirement 'mine'"):
        adapter.set_gate(state, "stable", "safety", "mine")
    with pytest.raises(InvalidArgument, match="examples"):
        adapter.set_gate(state, "stable", "safety", gates.PLATFORM, -1.0)
    with pytest.raises(InvalidArgument, match="≤ 0"):
        adapter.set_gate(state, "stable", "safety", gates.PLATFORM, 0.5, EXAMPLES)
    with pytest.raises(InvalidArgument, match="platform gates"):
        adapter.set_gate(state, "stable", "safety", gates.FOUR_EYES, -1.0)
    with pytest.raises(InvalidArgument, match="'latest' moves to every revision published"):
        adapter.set_gate(state, "latest", "safety")  # publish would pass it by
    assert adapter.set_gate(state, "latest", "") == [ChannelGateSet("latest", "")]


def test_examples_are_json_lines_of_prompt_and_continuation() -> None:
    examples = gates.parse_examples(
        b'{"prompt": "a", "continuation": "b"}\n\n{"prompt": "d", "continuation": "c"}\n'
    )
    assert examples == [gates.Example("a", "b"), gates.Example("d", "c")]
    with pytest.raises(InvalidArgument, match="line 2 is not JSON"):
        gates.parse_examples(b'{"prompt": "a", "continuation": "b"}\nnope')
    with pytest.raises(InvalidArgument, match="line 1"):
        gates.parse_examples(b'{"prompt": "a", "continuation": ""}')
    with pytest.raises(InvalidArgument, match="line 1"):
        gates.parse_examples(b'{"prompt": "", "continuation": "b"}')
    with pytest.raises(InvalidArgument, match="needs its suite"):
        gates.parse_examples(b"  ")
