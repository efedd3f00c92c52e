"""Channel gates: the suite a revision must pass before a channel may point at it, and
whose evaluation counts.

- `any`: the latest evaluation of the suite passed, whoever recorded it (the behaviour
  before requirements: a principal could gate a channel, pass its own evaluation and
  promote).
- `four_eyes`: the latest evaluation of the suite recorded by a principal other than the
  one moving the channel passed.
- `platform`: the latest evaluation recorded by the platform's evaluator on the gate's
  stored examples passed; the evaluator scores the revision and judges it against the
  gate's threshold itself, so nobody's word is taken for the verdict.

A suite's examples are JSON lines `{"prompt": ..., "continuation": ...}`, stored as a
content-addressed blob: the event carries only their sha256 (no personal data in event
payloads), and a platform evaluation names that sha256 as its dataset fingerprint.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import FailedPrecondition, InvalidArgument
from .events import EvaluationRecorded

ANY, FOUR_EYES, PLATFORM = "any", "four_eyes", "platform"
REQUIREMENTS = (ANY, FOUR_EYES, PLATFORM)
# What a platform evaluation measures and records.
MEAN_LOGPROB = "mean_token_logprob"
THRESHOLD = "threshold"
EXAMPLES = "examples"
MAX_EXAMPLES = 1000
MAX_EXAMPLES_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Gate:
    suite: str
    requirement: str = ANY
    threshold: float = 0.0  # platform: the least mean log-prob per continuation token
    examples_sha256: str = ""  # platform: the suite's examples

    def counts(self, evaluation: EvaluationRecorded, mover: str) -> bool:
        """Whether `evaluation` is one this gate accepts a verdict from."""
        if evaluation.suite != self.suite:
            return False
        if self.requirement == FOUR_EYES:
            return evaluation.evaluator != mover
        if self.requirement == PLATFORM:  # judged on these examples, against this threshold
            return (
                evaluation.platform
                and evaluation.dataset_fingerprint == self.examples_sha256
                and evaluation.metrics.get(THRESHOLD) == self.threshold
            )
        return True

    def describe(self) -> str:
        if self.requirement == FOUR_EYES:
            return f"a passing {self.suite!r} evaluation recorded by another principal"
        if self.requirement == PLATFORM:
            return (
                f"a passing {self.suite!r} evaluation recorded by the platform's evaluator "
                f"on the gate's examples ({self.examples_sha256[:12]}…, {MEAN_LOGPROB} ≥ "
                f"{self.threshold:g})"
            )
        return f"a passing {self.suite!r} evaluation"


def requirement(value: str) -> str:
    """The requirement named by `value` ("" is `any`)."""
    value = value or ANY
    if value not in REQUIREMENTS:
        raise InvalidArgument(
            f"unknown gate requirement {value!r}; use one of {', '.join(REQUIREMENTS)}"
        )
    return value


def check(gate: Gate, evaluations: Sequence[EvaluationRecorded], mover: str, where: str) -> None:
    """FailedPrecondition unless the latest evaluation `gate` accepts passed. `where`
    names the channel and revision for the message."""
    counted = [e for e in evaluations if gate.counts(e, mover)]
    if counted and counted[-1].passed:
        return
    raise FailedPrecondition(
        f"{where} requires {gate.describe()}; it has {_found(gate, evaluations, counted)}: "
        f"{_next_step(gate, mover)}"
    )


def _found(
    gate: Gate, evaluations: Sequence[EvaluationRecorded], counted: list[EvaluationRecorded]
) -> str:
    if counted:
        metric = counted[-1].metrics.get(MEAN_LOGPROB)
        score = f" ({MEAN_LOGPROB} {metric:g})" if metric is not None else ""
        return f"a failing one{score}"
    of_suite = [e for e in evaluations if e.suite == gate.suite]
    if not of_suite:
        return "none"
    by = sorted(
        {
            e.evaluator + (" (platform, other examples or threshold)" if e.platform else "")
            for e in of_suite
        }
    )
    return f"only evaluations that do not count, recorded by {', '.join(by)}"


def _next_step(gate: Gate, mover: str) -> str:
    if gate.requirement == FOUR_EYES:
        return f"have a principal other than {mover!r} evaluate it"
    if gate.requirement == PLATFORM:
        return "the platform's evaluator scores each new revision; wait for its verdict"
    return "record one first"


@dataclass(frozen=True)
class Example:
    prompt: str
    continuation: str


def parse_examples(data: bytes) -> list[Example]:
    """A suite's examples from their stored bytes (JSON lines); InvalidArgument naming
    the line that is wrong."""
    if not data.strip():
        raise InvalidArgument("a platform gate needs its suite's examples (JSON lines)")
    if len(data) > MAX_EXAMPLES_BYTES:
        raise InvalidArgument(
            f"the examples are {len(data):,} bytes; the limit is {MAX_EXAMPLES_BYTES:,}"
        )
    examples = []
    for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if line.strip():
            examples.append(_example(number, line))
    if len(examples) > MAX_EXAMPLES:
        raise InvalidArgument(f"{len(examples)} examples; a suite holds at most {MAX_EXAMPLES}")
    return examples


def _example(number: int, line: str) -> Example:
    rule = 'each line must be {"prompt": "<non-empty text>", "continuation": "<non-empty text>"}'
    try:
        item = json.loads(line)
    except ValueError:
        raise InvalidArgument(f"examples line {number} is not JSON; {rule}") from None
    prompt = item.get("prompt") if isinstance(item, dict) else None
    continuation = item.get("continuation") if isinstance(item, dict) else None
    if not isinstance(prompt, str) or not isinstance(continuation, str):
        raise InvalidArgument(f"examples line {number}: {rule}")
    if not prompt or not continuation:
        raise InvalidArgument(f"examples line {number}: {rule}")
    return Example(prompt, continuation)


def check_threshold(value: float) -> float:
    if not math.isfinite(value) or value > 0:
        raise InvalidArgument(
            f"threshold {value} is not a mean log-prob: use a finite number ≤ 0 "
            "(e.g. -2.5: continuations at least e^-2.5 likely per token on average)"
        )
    return value
