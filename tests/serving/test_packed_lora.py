"""Packed LoRA slots against PEFT, the correctness reference: single adapters, a mixed
batch (one adapter per sample, or none), and a weighted stack as one exact delta."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel, get_peft_model_state_dict

from mint.models.base import build_base, tiny_llama_config
from mint.models.lora import attach_lora
from mint.serving.packed_model import LoraWeights, PackedLoraModel

TOKENS = torch.arange(30).reshape(3, 10) % 256


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folders = {}
    for name, rank, seed in (("a", 4, 1), ("b", 8, 2)):
        folder = tmp_path_factory.mktemp(name)
        attach_lora(build_base(tiny_llama_config(), seed=0), rank=rank, seed=seed).save_pretrained(
            str(folder)
        )
        folders[name] = folder
    return folders


@pytest.fixture(scope="module")
def reference(adapters: dict[str, Path]) -> PeftModel:
    model = PeftModel.from_pretrained(
        build_base(tiny_llama_config(), seed=0), adapters["a"], adapter_name="a"
    )
    model.load_adapter(str(adapters["b"]), adapter_name="b")
    model.eval()
    return model


def _weights(reference: PeftModel, name: str) -> LoraWeights:
    config: Any = reference.peft_config[name]  # a LoraConfig
    state = get_peft_model_state_dict(reference, adapter_name=name)
    return LoraWeights.from_peft(state, config.lora_alpha)


@pytest.fixture(scope="module")
def packed(reference: PeftModel) -> PackedLoraModel:
    model = PackedLoraModel(
        build_base(tiny_llama_config(), seed=0), ["q_proj", "v_proj"], slots=8, max_rank=16
    )
    model.load(1, _weights(reference, "a"))
    model.load(2, _weights(reference, "b"))
    return model


def test_mixed_batch_matches_peft(reference: PeftModel, packed: PackedLoraModel) -> None:
    with torch.no_grad():
        expected = reference(TOKENS, adapter_names=["a", "b", "__base__"]).logits
        got = packed(TOKENS, torch.tensor([1, 2, 0]))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_each_sample_equals_its_solo_run(packed: PackedLoraModel) -> None:
    with torch.no_grad():
        mixed = packed(TOKENS, torch.tensor([2, 0, 1]))
        for i, slot in enumerate([2, 0, 1]):
            solo = packed(TOKENS[i : i + 1], torch.tensor([slot]))
            torch.testing.assert_close(mixed[i : i + 1], solo, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(mixed[0], packed(TOKENS[:1], torch.tensor([1]))[0])


def test_weighted_stack_is_one_exact_delta(reference: PeftModel, packed: PackedLoraModel) -> None:
    reference.add_weighted_adapter(["a", "b"], [0.7, 0.3], "ab", combination_type="cat")
    reference.set_adapter("ab")
    stacked = LoraWeights.stack([(_weights(reference, "a"), 0.7), (_weights(reference, "b"), 0.3)])
    assert stacked.rank == 12
    packed.load(3, stacked)
    with torch.no_grad():
        expected = reference(TOKENS).logits
        got = packed(TOKENS, torch.tensor([3, 3, 3]))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_slot_bounds_and_rank_are_checked(packed: PackedLoraModel, reference: PeftModel) -> None:
    with pytest.raises(ValueError, match="slot 0"):
        packed.load(0, _weights(reference, "a"))
    too_big = LoraWeights.stack([(_weights(reference, "b"), 1.0)] * 3)  # rank 24 > 16
    with pytest.raises(ValueError, match="does not fit"):
        packed.load(4, too_big)


def test_loading_from_stored_bytes_checks_the_hash(
    adapters: dict[str, Path], reference: PeftModel
) -> None:
    import hashlib

    from mint.domain.errors import DataLoss
    from mint.serving.loading import weights_from_bytes

    data = (adapters["b"] / "adapter_model.safetensors").read_bytes()
    config = (adapters["b"] / "adapter_config.json").read_text()
    loaded = weights_from_bytes(data, hashlib.sha256(data).hexdigest(), config)
    expected = _weights(reference, "b")
    assert loaded.modules.keys() == expected.modules.keys()
    for name, (a, b, scale) in loaded.modules.items():
        ea, eb, escale = expected.modules[name]
        assert torch.equal(a, ea) and torch.equal(b, eb) and scale == escale
    with pytest.raises(DataLoss, match="not the recorded"):
        weights_from_bytes(data[:-1] + b"\x00", hashlib.sha256(data).hexdigest(), config)


def test_partial_and_mixed_rank_adapters_load_layer_by_layer(tmp_path: Path) -> None:
    """The slot banks load all same-shaped layers at once; an adapter that wraps only some
    of them, or with different ranks per layer, takes the per-layer path, overwriting
    whatever an earlier adapter left in that slot."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=["q_proj"],
        rank_pattern={"layers.0.self_attn.q_proj": 2},
        init_lora_weights=False,
    )
    torch.manual_seed(7)
    peft_model = get_peft_model(build_base(tiny_llama_config(), seed=0), config)
    peft_model.eval()
    state = get_peft_model_state_dict(peft_model)
    weights = LoraWeights.from_peft(state, 8.0, alpha_pattern={})
    model = PackedLoraModel(build_base(tiny_llama_config(), seed=0), ["q_proj", "v_proj"], 4, 8)
    full = LoraWeights({n: (torch.randn(8, 64), torch.randn(64, 8), 1.0) for n in model.layers})
    model.load(1, full)  # leaves every layer of slot 1 non-zero
    model.load(1, weights)
    with torch.no_grad():
        expected = peft_model(TOKENS[:1]).logits
        assert torch.allclose(model(TOKENS[:1], torch.tensor([1])), expected, atol=1e-5)


def test_a_fetched_revision_is_checked_against_its_hash_even_when_it_does_not_parse(
    adapters: dict[str, Path],
) -> None:
    """The hash is computed beside the parse: altered bytes are reported as altered
    (DataLoss), when they do not parse at once, else by `verify`; intact ones load."""
    import hashlib

    from mint.domain.errors import DataLoss
    from mint.serving.catalog import Catalog, weights_key
    from mint.serving.loading import fetch_revision
    from mint.serving.requests import RevisionRef

    data = (adapters["b"] / "adapter_model.safetensors").read_bytes()
    config = (adapters["b"] / "adapter_config.json").read_text()
    ref = RevisionRef(
        "a" * 32, "acme/b", 1, hashlib.sha256(data).hexdigest(), len(data), "f", config
    )
    for stored, altered in ((data, False), (data[:-1] + b"\x00", True), (b"junk" * 9, True)):
        objects = {weights_key(ref): stored}
        catalog = Catalog(objects)  # a dict answers get(key)
        if altered:
            with pytest.raises(DataLoss, match="not the recorded"):
                fetch_revision(catalog, ref).verify()
        else:
            fetched = fetch_revision(catalog, ref)
            fetched.verify()
            assert fetched.weights.modules


def test_weights_fetched_into_the_host_reserve_equal_those_read_from_the_bytes(
    adapters: dict[str, Path],
) -> None:
    """A node that keeps what it fetches copies the bytes into memory written beforehand
    (`HostReserve`); the weights are views of that copy and still checked by their hash."""
    import hashlib
    import time

    from mint.domain.errors import DataLoss
    from mint.serving.catalog import Catalog, weights_key
    from mint.serving.host_reserve import HostReserve
    from mint.serving.loading import fetch_revision
    from mint.serving.requests import RevisionRef

    data = (adapters["b"] / "adapter_model.safetensors").read_bytes()
    config = (adapters["b"] / "adapter_config.json").read_text()
    ref = RevisionRef(
        "a" * 32, "acme/b", 1, hashlib.sha256(data).hexdigest(), len(data), "f", config
    )
    reserve = HostReserve(1 << 20)
    try:
        plain = fetch_revision(Catalog({weights_key(ref): data}), ref)
        missed = fetch_revision(Catalog({weights_key(ref): data}), ref, reserve=reserve)
        assert missed.data is data  # nothing ready yet: the fetched bytes, as without one
        deadline = time.monotonic() + 10
        while not reserve.ready(len(data)):
            assert time.monotonic() < deadline, "the reserve made no buffer"
            time.sleep(0.005)
        kept = fetch_revision(Catalog({weights_key(ref): data}), ref, reserve=reserve)
        kept.verify()
        assert isinstance(kept.data, memoryview) and bytes(kept.data) == data
        assert plain.weights.modules.keys() == kept.weights.modules.keys()
        for name, (a, b, scale) in plain.weights.modules.items():
            kept_a, kept_b, kept_scale = kept.weights.modules[name]
            assert torch.equal(a, kept_a) and torch.equal(b, kept_b) and scale == kept_scale
        altered = data[:-1] + bytes([data[-1] ^ 1])
        catalog = Catalog({weights_key(ref): altered})
        with pytest.raises(DataLoss, match="not the recorded"):
            fetch_revision(catalog, ref, reserve=reserve).verify()
    finally:
        reserve.close()
