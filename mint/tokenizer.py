"""A byte-level tokenizer built in code (no hub): every UTF-8 byte is a token, plus
<bos>, <eos> and <pad>. Any text round-trips; bases built here use its vocabulary.

Torch-free (transformers' tokenizer wrapper needs only `tokenizers`): the router, in the
slim install, counts prompt tokens with it; nodes report the same fingerprint."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from mint.domain.errors import FailedPrecondition

SPECIALS = ("<pad>", "<bos>", "<eos>")
VOCAB_SIZE = 256 + len(SPECIALS)


def byte_tokenizer() -> PreTrainedTokenizerFast:
    alphabet = pre_tokenizers.ByteLevel.alphabet()  # the 256 byte symbols
    vocab = {symbol: i for i, symbol in enumerate(sorted(alphabet))}
    for special in SPECIALS:
        vocab[special] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer: PreTrainedTokenizerFast = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        padding_side="left",
    )
    return tokenizer


def load_tokenizer_dir(path: str) -> PreTrainedTokenizerFast:
    """The tokenizer saved beside a local base model (tokenizer.json: no code, no pickle),
    with left padding for batched generation."""
    if not (Path(path) / "tokenizer.json").is_file():  # else transformers tries other formats
        raise FailedPrecondition(
            f"{path} has no tokenizer.json: save the base's tokenizer there "
            "(tokenizer.save_pretrained)"
        )
    tokenizer: PreTrainedTokenizerFast = PreTrainedTokenizerFast.from_pretrained(
        path, padding_side="left"
    )
    if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
        raise ValueError(f"{path}: the tokenizer must define pad and eos tokens")
    return tokenizer


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerFast) -> str:
    """The sha256 of the tokenizer's serialized form (its tokenizer.json): two tokenizers
    with the same fingerprint count any text the same. A save and load keep it."""
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()
