"""An update's examples: the JSON a user sends with RequestUpdate, checked before it is
stored and read again by the trainer (one parser, so the two never disagree).

    {"examples": [{"prompt": "...", "completion": "...", "rating": 1}, ...]}

`rating` (feedback only): 1 learns the completion, -1 marks it bad and leaves it out.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from mint.domain.errors import InvalidArgument

MAX_EXAMPLES_BYTES = 1024 * 1024  # one gRPC message, well under its 4 MiB
MAX_EXAMPLES = 1000
MAX_TEXT_CHARS = 4096
RATINGS = (1, -1)
FORMAT = '{"examples": [{"prompt": "...", "completion": "..."}, ...]}'


@dataclass(frozen=True)
class Example:
    prompt: str
    completion: str
    rating: int = 1


@dataclass(frozen=True)
class Examples:
    items: tuple[Example, ...]
    sha256: str  # of the bytes as sent: the dataset's fingerprint

    def learnt(self) -> tuple[Example, ...]:
        """What training learns from: the examples not rated bad."""
        return tuple(e for e in self.items if e.rating > 0)


def parse_examples(data: bytes, kind: str = "examples") -> Examples:
    """The examples in `data`, or InvalidArgument saying what is wrong."""
    if len(data) > MAX_EXAMPLES_BYTES:
        raise InvalidArgument(
            f"the examples are {len(data):,} bytes; the limit is {MAX_EXAMPLES_BYTES:,}: "
            "send them in several updates"
        )
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidArgument(f"the examples are not UTF-8 JSON ({exc}); send {FORMAT}") from None
    listed = document.get("examples") if isinstance(document, dict) else None
    if not isinstance(listed, list) or not listed:
        raise InvalidArgument(f"the examples must be a non-empty list: send {FORMAT}")
    if len(listed) > MAX_EXAMPLES:
        raise InvalidArgument(f"{len(listed)} examples; the limit is {MAX_EXAMPLES} per update")
    items = tuple(_example(i, raw, kind) for i, raw in enumerate(listed))
    if not any(e.rating > 0 for e in items):
        raise InvalidArgument("no example is rated good (1): there is nothing to learn from")
    return Examples(items, hashlib.sha256(data).hexdigest())


def _example(index: int, raw: object, kind: str) -> Example:
    if not isinstance(raw, dict):
        raise InvalidArgument(f"example {index} is not an object: send {FORMAT}")
    texts: list[str] = []
    for field in ("prompt", "completion"):
        value = raw.get(field)
        if not isinstance(value, str) or not value:
            raise InvalidArgument(f"example {index} needs a non-empty string {field!r}")
        if len(value) > MAX_TEXT_CHARS:
            raise InvalidArgument(
                f"example {index}'s {field} is {len(value)} characters; the limit is "
                f"{MAX_TEXT_CHARS}"
            )
        texts.append(value)
    rating = raw.get("rating", 1)
    if rating not in RATINGS or isinstance(rating, bool):
        raise InvalidArgument(f"example {index}'s rating must be 1 or -1, not {rating!r}")
    if rating != 1 and kind != "feedback":
        raise InvalidArgument(f"example {index} is rated {rating}: ratings are for feedback")
    return Example(texts[0], texts[1], int(rating))
