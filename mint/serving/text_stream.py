"""The text of a generation as its tokens arrive, in pieces that add up to the whole.

A byte-level tokenizer gives a token per byte, so a character of several UTF-8 bytes
spans several tokens, and a token decoded alone is "\ufffd" (the replacement character).
Each piece is therefore cut from the decode of the whole sequence so far (decoded as a
whole generation is), and text that ends in replacement characters is held back until a
later token completes it or the generation ends. So the pieces concatenate to exactly the
text of the whole sequence. Pure (no torch): the nodes and the router's HTTP layer use it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

log = logging.getLogger(__name__)
REPLACEMENT = "\ufffd"  # what an incomplete (or invalid) UTF-8 sequence decodes to
Decode = Callable[[list[int]], str]


class TextStream:
    """`add(tokens)` returns the text those tokens complete; `finish()` the rest."""

    def __init__(self, decode: Decode) -> None:
        self._decode = decode
        self._tokens: list[int] = []
        self._sent = ""

    @property
    def text(self) -> str:
        """What was given out so far."""
        return self._sent

    def add(self, tokens: Sequence[int]) -> str:
        """The new text that `tokens` complete ("" while a character is incomplete).
        Decoding the whole sequence costs O(length) a call: generations are at most a
        few hundred tokens (`requests.MAX_NEW_TOKENS`)."""
        self._tokens.extend(tokens)
        return self._give(self._decode(self._tokens).rstrip(REPLACEMENT))

    def finish(self) -> str:
        """What is left at the end: held-back text, replacement characters included (the
        whole generation's text has them too)."""
        whole = self._decode(self._tokens)
        if not whole.startswith(self._sent):
            # A tokenizer whose decode rewrites earlier text as more arrives (none here:
            # byte-level decodes only append): what was given cannot be taken back.
            log.warning("the tokenizer rewrote text already streamed; the pieces differ")
            return ""
        return self._give(whole)

    def _give(self, text: str) -> str:
        if not text.startswith(self._sent):
            return ""  # held back until `finish` (see there)
        piece, self._sent = text[len(self._sent) :], text
        return piece
