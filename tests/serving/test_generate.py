"""Generation under continuous batching equals PEFT's own generate: single adapters, a
mixed batch, a weighted stack and the bare base, with requests joining mid-generation;
and sampled requests draw on their own, whatever their batch-mates."""

from __future__ import annotations

import pytest
import torch

from mint.domain.errors import InvalidArgument
from mint.serving.decode_graphs import DecodeGraphs
from mint.serving.requests import RevisionRef, Sampling
from mint.serving.sampling import draw
from mint.serving.scheduler import Generation, Scheduler
from mint.serving.static_kv import StaticKvBatch
from mint.tokenizer import byte_tokenizer
from tests.serving.conftest import Pair

Parts = list[tuple[RevisionRef, float]]


def run(scheduler: Scheduler) -> int:
    """Step until idle; how many steps that took."""
    steps = 0
    while scheduler.step():
        steps += 1
    return steps


def peft_greedy(pair: Pair, prompt: list[int], adapter: str, new: int) -> list[int]:
    with torch.no_grad():
        out = pair.reference.generate(
            input_ids=torch.tensor([prompt]),
            adapter_names=[adapter],
            max_new_tokens=new,
            do_sample=False,
            pad_token_id=0,
            eos_token_id=None,
        )
    return list(out[0, len(prompt) :].tolist())


def stack_ab(pair: Pair) -> str:
    """PEFT's own exact stack of a (0.7) and b (0.5), added once."""
    if "ab" not in pair.reference.peft_config:
        pair.reference.add_weighted_adapter(["a", "b"], [0.7, 0.5], "ab", combination_type="cat")
    return "ab"


def test_greedy_mixed_batch_equals_peft_generate(pair: Pair) -> None:
    tok = byte_tokenizer()
    prompts = ["Hello there", "MinT", "adapters!"]
    scheduler = Scheduler(pair.engine())
    asks: list[Parts] = [[(pair.refs["a"], 1.0)], [(pair.refs["b"], 1.0)], []]
    running = [
        scheduler.submit(parts, tok(p)["input_ids"], Sampling(8))
        for parts, p in zip(asks, prompts, strict=True)
    ]
    run(scheduler)
    batch = tok(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        theirs = pair.reference.generate(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            adapter_names=["a", "b", "__base__"],
            max_new_tokens=8,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
            eos_token_id=None,
        )[:, batch["input_ids"].shape[1] :]
    ours = [g.result() for g in running]
    assert [o.tokens for o in ours] == theirs.tolist()
    assert {o.batch_size for o in ours} == {3}, "the three should share their passes"
    assert len({tuple(o.tokens) for o in ours}) == 3


@pytest.mark.parametrize("padded", [False, True])
def test_requests_joining_mid_generation_equal_peft(pair: Pair, padded: bool) -> None:
    """One request decodes; a single adapter, a stack and the bare base join it three
    steps in, with prompts of other lengths; each equals its PEFT solo run. `padded`:
    decoding by the padded passes CUDA graphs capture (here without capturing)."""
    engine = pair.engine()
    graphs = DecodeGraphs(engine.layout, capture=False) if padded else None
    scheduler = Scheduler(engine, graphs=graphs)
    a, b = pair.refs["a"], pair.refs["b"]
    first = scheduler.submit([(a, 1.0)], [72, 105, 33, 9, 200], Sampling(12))
    for _ in range(3):
        scheduler.step()
    assert 0 < len(first.tokens) < 12
    joining: list[tuple[Parts, list[int], str]] = [
        ([(b, 1.0)], [87, 111], "b"),
        ([(a, 0.7), (b, 0.5)], [65, 66, 67, 68, 69, 70, 71, 72, 73], stack_ab(pair)),
        ([], [1, 2, 3], "__base__"),
    ]
    later = [scheduler.submit(parts, prompt, Sampling(10)) for parts, prompt, _ in joining]
    run(scheduler)
    assert first.result().tokens == peft_greedy(pair, [72, 105, 33, 9, 200], "a", 12)
    for g, (_, prompt, adapter) in zip(later, joining, strict=True):
        assert g.result().tokens == peft_greedy(pair, prompt, adapter, 10), adapter
    assert first.result().batch_size == 4, "the three joined the running request"


def test_sampling_is_seeded_and_checked(pair: Pair) -> None:
    scheduler = Scheduler(pair.engine())
    parts: Parts = [(pair.refs["a"], 1.0)]
    prompt = [72, 105]
    runs = [scheduler.submit(parts, prompt, Sampling(6, 0.8, 0.9, seed=s)) for s in (3, 3, 4)]
    run(scheduler)
    first, again, other = (g.result().tokens for g in runs)
    assert first == again
    assert first != other, "sampling ignored its seed (or never sampled)"
    for bad in (Sampling(0), Sampling(4, temperature=-1), Sampling(4, top_p=0)):
        with pytest.raises(InvalidArgument):
            scheduler.submit(parts, prompt, bad)
    with pytest.raises(InvalidArgument, match="empty"):
        scheduler.submit(parts, [], Sampling(4))


def test_each_sample_draws_on_its_own_whatever_its_batch_mates(pair: Pair) -> None:
    engine = pair.engine()
    prompts = [[72, 105, 33], [87, 111], [65, 66, 67, 68]]
    rows = [Sampling(6, 0.9, 0.95, seed=3), Sampling(6), Sampling(6, 1.3, seed=11)]
    asks: list[Parts] = [[(pair.refs["a"], 1.0)], [(pair.refs["b"], 1.0)], []]
    alone = []
    for parts, prompt, sampling in zip(asks, prompts, rows, strict=True):
        scheduler = Scheduler(engine)
        alone.append(scheduler.submit(parts, prompt, sampling))
        run(scheduler)
    scheduler = Scheduler(engine)
    together: list[Generation] = []
    for parts, prompt, sampling in zip(asks, prompts, rows, strict=True):
        together.append(scheduler.submit(parts, prompt, sampling))
        scheduler.step()  # each joins the others mid-generation
    run(scheduler)
    for i, (one, mixed) in enumerate(zip(alone, together, strict=True)):
        assert one.result().tokens == mixed.result().tokens, f"sample {i} depends on its mates"
    assert together[0].result().batch_size > 1


def test_top_p_keeps_the_smallest_set_of_tokens_that_reaches_it() -> None:
    # probabilities 0.5, 0.3, 0.15, 0.05: top_p 0.75 keeps the first two, 0.85 three
    logits = torch.log(torch.tensor([0.05, 0.5, 0.15, 0.3]))
    generator = torch.Generator().manual_seed(0)
    for top_p, allowed in ((0.75, {1, 3}), (0.85, {1, 3, 2}), (0.01, {1})):
        drawn = {draw(logits, 1.0, top_p, generator) for _ in range(400)}
        assert drawn == allowed, (top_p, drawn)


def test_a_failing_captured_pass_falls_back_to_plain_passes(pair: Pair) -> None:
    """If capturing a decode pass fails (on a GPU), that pass runs again without graphs,
    and so do the rest: the request's tokens are what they would have been."""

    class Failing(DecodeGraphs):
        def forward(self, batch: StaticKvBatch, ids: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("capturing failed")

    engine = pair.engine()
    scheduler = Scheduler(engine, graphs=Failing(engine.layout))
    prompt = [72, 105, 33, 9]
    g = scheduler.submit([(pair.refs["a"], 1.0)], prompt, Sampling(6))
    run(scheduler)
    assert g.result().tokens == peft_greedy(pair, prompt, "a", 6)
    assert scheduler.graphs is None
