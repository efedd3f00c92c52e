"""Generation over packed adapters equals PEFT's own generate for a mixed batch."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from peft import PeftModel, get_peft_model_state_dict

from mint.domain.errors import InvalidArgument
from mint.models.base import build_base, tiny_llama_config
from mint.models.lora import attach_lora
from mint.serving.generate import Sampling, generate
from mint.serving.packed_model import LoraWeights, PackedLoraModel
from mint.serving.sampling import draw
from mint.tokenizer import VOCAB_SIZE, byte_tokenizer


def config():  # the tokenizer's vocabulary
    return tiny_llama_config(vocab=VOCAB_SIZE)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    folders = {}
    for name, seed in (("a", 1), ("b", 2)):
        folder = tmp_path_factory.mktemp(name)
        lora = attach_lora(build_base(config(), seed=0), rank=4, seed=seed)
        with torch.no_grad():  # make the adapters strong enough to change greedy choices
            for p in lora.parameters():
                if p.requires_grad:
                    p.mul_(8)
        lora.save_pretrained(str(folder))
        folders[name] = folder
    reference = PeftModel.from_pretrained(
        build_base(config(), seed=0), folders["a"], adapter_name="a"
    )
    reference.load_adapter(str(folders["b"]), adapter_name="b")
    reference.eval()
    packed = PackedLoraModel(build_base(config(), seed=0), ["q_proj", "v_proj"], 4, 8)
    for slot, name in ((1, "a"), (2, "b")):
        cfg: Any = reference.peft_config[name]  # a LoraConfig
        packed.load(
            slot,
            LoraWeights.from_peft(
                get_peft_model_state_dict(reference, adapter_name=name), cfg.lora_alpha
            ),
        )
    return reference, packed


def test_greedy_mixed_batch_equals_peft_generate(setup) -> None:
    reference, packed = setup
    tok = byte_tokenizer()
    batch = tok(["Hello there", "MinT", "adapters!"], padding=True, return_tensors="pt")
    ours = generate(
        packed,
        batch["input_ids"],
        batch["attention_mask"],
        torch.tensor([1, 2, 0]),
        Sampling(max_new_tokens=8),
        pad_token_id=tok.pad_token_id,
    )
    theirs = reference.generate(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        adapter_names=["a", "b", "__base__"],
        max_new_tokens=8,
        do_sample=False,
        pad_token_id=tok.pad_token_id,
        eos_token_id=None,
    )[:, batch["input_ids"].shape[1] :]
    assert torch.equal(ours, theirs)
    assert not torch.equal(ours[0], ours[2]) or not torch.equal(ours[1], ours[2])


def test_sampling_is_seeded_and_checked(setup) -> None:
    _, packed = setup
    ids, mask = torch.tensor([[72, 105]]), torch.ones(1, 2, dtype=torch.long)
    first = generate(packed, ids, mask, torch.tensor([1]), Sampling(6, 0.8, 0.9, seed=3))
    again = generate(packed, ids, mask, torch.tensor([1]), Sampling(6, 0.8, 0.9, seed=3))
    assert torch.equal(first, again)
    other = generate(packed, ids, mask, torch.tensor([1]), Sampling(6, 0.8, 0.9, seed=4))
    assert not torch.equal(first, other), "sampling ignored its seed (or never sampled)"
    for bad in (Sampling(0), Sampling(4, temperature=-1), Sampling(4, top_p=0)):
        with pytest.raises(InvalidArgument):
            generate(packed, ids, mask, torch.tensor([1]), bad)


def test_each_sample_draws_on_its_own_whatever_its_batch_mates(setup) -> None:
    _, packed = setup
    prompts = [[72, 105, 33], [87, 111], [65, 66, 67, 68]]
    rows = [Sampling(6, 0.9, 0.95, seed=3), Sampling(6), Sampling(6, 1.3, seed=11)]
    slots = [1, 2, 0]
    width = max(len(p) for p in prompts)
    ids = torch.zeros(3, width, dtype=torch.long)
    mask = torch.zeros(3, width, dtype=torch.long)
    for i, prompt in enumerate(prompts):  # left padded, as the engine does
        ids[i, width - len(prompt) :] = torch.tensor(prompt)
        mask[i, width - len(prompt) :] = 1
    together = generate(packed, ids, mask, torch.tensor(slots), rows)
    for i, prompt in enumerate(prompts):
        alone = generate(
            packed,
            torch.tensor([prompt]),
            torch.ones(1, len(prompt), dtype=torch.long),
            torch.tensor([slots[i]]),
            rows[i],
        )
        assert torch.equal(together[i], alone[0]), f"sample {i} depends on its batch-mates"
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(packed, ids, mask, torch.tensor(slots), [*rows[:2], Sampling(5)])


def test_top_p_keeps_the_smallest_set_of_tokens_that_reaches_it() -> None:
    # probabilities 0.5, 0.3, 0.15, 0.05: top_p 0.75 keeps the first two, 0.85 three
    logits = torch.log(torch.tensor([0.05, 0.5, 0.15, 0.3]))
    generator = torch.Generator().manual_seed(0)
    for top_p, allowed in ((0.75, {1, 3}), (0.85, {1, 3, 2}), (0.01, {1})):
        drawn = {draw(logits, 1.0, top_p, generator) for _ in range(400)}
        assert drawn == allowed, (top_p, drawn)
