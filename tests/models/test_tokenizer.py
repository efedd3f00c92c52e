"""The tokenizer built in code round-trips any text and pads on the left for batching."""

from __future__ import annotations

from mint.tokenizer import VOCAB_SIZE, byte_tokenizer


def test_round_trip_and_vocabulary() -> None:
    tok = byte_tokenizer()
    text = "Grüße, MinT — 适配器 🧩"
    ids = tok(text)["input_ids"]
    assert len(ids) == len(text.encode())
    assert tok.decode(ids) == text
    assert len(tok) == VOCAB_SIZE and max(ids) < 256


def test_left_padding_for_batches() -> None:
    tok = byte_tokenizer()
    batch = tok(["hi", "hello"], padding=True, return_tensors="pt")
    assert batch["input_ids"].shape == (2, 5)
    assert batch["input_ids"][0, :3].tolist() == [tok.pad_token_id] * 3
    assert batch["attention_mask"][0].tolist() == [0, 0, 0, 1, 1]
