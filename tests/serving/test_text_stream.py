"""Streamed text pieces add up to the whole generation's text, whatever bytes the tokens
are: characters of several UTF-8 bytes are held back until complete."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mint.serving.text_stream import REPLACEMENT, TextStream
from mint.tokenizer import VOCAB_SIZE, byte_tokenizer

TOKENIZER = byte_tokenizer()


def decode(tokens: list[int]) -> str:
    return str(TOKENIZER.decode(tokens, skip_special_tokens=True))  # as a node decodes


def pieces(tokens: list[int], per_chunk: int = 1) -> list[str]:
    stream = TextStream(decode)
    out = [stream.add(tokens[i : i + per_chunk]) for i in range(0, len(tokens), per_chunk)]
    return [*out, stream.finish()]


def test_a_character_of_several_bytes_comes_out_whole_once_complete() -> None:
    tokens = TOKENIZER("hé €!")["input_ids"]
    assert pieces(tokens) == ["h", "", "é", " ", "", "", "€", "!", ""]
    assert "".join(decode([t]) for t in tokens) != "hé €!"  # what a token alone gives


def test_a_generation_ending_inside_a_character_ends_with_what_the_whole_decode_gives() -> None:
    tokens = TOKENIZER("a€")["input_ids"][:-1]  # the euro sign's last byte never came
    assert pieces(tokens) == ["a", "", "", REPLACEMENT]
    assert "".join(pieces(tokens)) == decode(tokens)


@given(
    st.lists(st.integers(0, VOCAB_SIZE - 1), max_size=40),
    st.integers(1, 4),
)
def test_pieces_add_up_to_the_whole_decode(tokens: list[int], per_chunk: int) -> None:
    """Any tokens (invalid UTF-8 and special tokens included), in chunks of any size."""
    got = pieces(tokens, per_chunk)
    assert "".join(got) == decode(tokens)
    assert not any(p.endswith(REPLACEMENT) for p in got[:-1])  # held back until complete
