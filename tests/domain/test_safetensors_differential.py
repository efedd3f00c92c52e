"""The weights reader against the `safetensors` library on generated files (hypothesis).

A file the library refuses is refused here too. A file it loads is read the same here
(names, dtypes, shapes) or refused by a stated policy, whose reason the message names:
dtypes, NaN/Inf, a key twice, fields outside an entry's three, and the size limits.
"""

from __future__ import annotations

import functools
import json
import re
import struct
from collections.abc import Callable

import pytest
import safetensors
import safetensors.torch
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mint.domain.errors import InvalidArgument
from mint.models.base import build_base, tiny_llama_config
from mint.validation.adapter import validate_adapter
from mint.validation.limits import Limits
from mint.validation.safetensors_bytes import ITEM_SIZE, check_finite, read_header
from tests.domain.safetensors_files import (
    LOOKS_LIKE_PICKLE,
    LOOKS_LIKE_ZIP,
    Pairs,
    Raw,
    header_length,
    save_with_header_length,
    split,
    with_header,
)

LIMITS = Limits()
# Every dtype the reader knows, so that a dtype refusal never hides how a structure is read.
ANY_DTYPE = Limits(dtypes=frozenset(ITEM_SIZE))
# Fixed examples each run, no example database: the same cases in CI as here.
FAST = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],  # the machine may be busy; drawing is slow there
)
POLICY = re.compile(
    r"has dtype|NaN or Inf|more than once|unknown fields|limit is|nested too deeply"
)
TORCH_DTYPES = {
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F64": torch.float64,
    "I32": torch.int32,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
Entries = dict[str, tuple[str, tuple[int, ...]]]
Shapes = dict[str, tuple[int, ...]]


def library_entries(data: bytes) -> Entries | None:
    """What the library reads, or None where it refuses the file."""
    try:
        entries = safetensors.deserialize(data)
    except safetensors.SafetensorError:
        return None
    return {name: (info["dtype"], tuple(info["shape"])) for name, info in entries}


def library_has_non_finite(data: bytes) -> bool:
    """NaN or Inf in a float tensor, as the library hands out its bytes (flat: some shapes
    the format allows, torch cannot build)."""
    return any(
        not torch.isfinite(torch.frombuffer(bytearray(info["data"]), dtype=dtype)).all()
        for _, info in safetensors.deserialize(data)
        if (dtype := TORCH_DTYPES.get(info["dtype"])) is not None
        and dtype.is_floating_point
        and info["data"]
    )


def our_entries(data: bytes, limits: Limits) -> Entries | InvalidArgument:
    try:
        tensors, data_start = read_header(data, limits)
        check_finite(data, data_start, tensors)
    except InvalidArgument as refusal:
        return refusal
    return {name: (t.dtype, t.shape) for name, t in tensors.items()}


def assert_agrees_with_library(data: bytes, limits: Limits = LIMITS) -> None:
    theirs, ours = library_entries(data), our_entries(data, limits)
    if theirs is None:
        assert isinstance(ours, InvalidArgument), f"accepted what the library refuses: {ours}"
    elif isinstance(ours, InvalidArgument):
        reason = str(ours)
        assert POLICY.search(reason), f"refused what the library loads, for no policy: {reason}"
        if "has dtype" in reason:
            assert any(dtype not in limits.dtypes for dtype, _ in theirs.values())
        if "NaN or Inf" in reason:
            assert library_has_non_finite(data)
    else:
        assert ours == theirs
        assert not library_has_non_finite(data)


# --- valid files, written by the library ------------------------------------------------

names = st.text(st.characters(codec="utf-8"), max_size=8).filter(lambda n: n != "__metadata__")
shapes = st.lists(st.integers(0, 4), max_size=3).map(tuple)
header_lows = st.sampled_from([None, LOOKS_LIKE_PICKLE, LOOKS_LIKE_ZIP, (0x480, 65536)])


def make_tensor(
    dtype: str, shape: tuple[int, ...], seed: int, poison: float | None
) -> torch.Tensor:
    torch_dtype = TORCH_DTYPES[dtype]
    generator = torch.Generator().manual_seed(seed)
    if not torch_dtype.is_floating_point:
        return torch.randint(0, 2, shape, generator=generator).to(torch_dtype)
    tensor = torch.randn(shape, generator=generator).to(torch_dtype)
    if poison is not None and tensor.numel():
        tensor.view(-1)[0] = poison
    return tensor


@st.composite
def library_files(draw: st.DrawFn) -> bytes:
    specs = draw(
        st.dictionaries(names, st.tuples(st.sampled_from(sorted(TORCH_DTYPES)), shapes), max_size=4)
    )
    poison = draw(st.sampled_from([None, None, None, float("nan"), float("inf")]))
    seed = draw(st.integers(0, 1000))
    tensors = {
        name: make_tensor(dtype, shape, seed + i, poison)
        for i, (name, (dtype, shape)) in enumerate(specs.items())
    }
    metadata = draw(st.none() | st.dictionaries(names, names, min_size=1, max_size=2))
    return save_with_header_length(tensors, metadata, draw(header_lows))


# --- mutations of those files --------------------------------------------------------------

# JSON that Python's json reads and serde_json (the library's) does not, or reads otherwise.
odd_tokens = st.sampled_from(
    ["-0", "1.0", "1e400", "NaN", "-Infinity", str(2**64), "1" * 5000, "true", '"\\ud800"']
).map(Raw)
sizes = st.integers(0, 40) | st.sampled_from([-1, 2**32, 2**63, 2**64 - 1, 2**64])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=5,
)
field_values = st.one_of(
    odd_tokens,
    odd_tokens.map(lambda token: Raw(f"[{token.text}]")),
    st.lists(sizes, max_size=3),
    st.sampled_from([*sorted(TORCH_DTYPES), "F8_E4M3", "U64", "f32", "Q4"]),
    st.just(Raw("[" * 2000 + "]" * 2000)),
    json_values,
)
odd_metadata: st.SearchStrategy[object] = st.sampled_from(
    [None, [], {"k": 1}, {"k": Raw('"\\udc00"')}, Pairs((("k", "1"), ("k", "2")))]
)
name_suffixes = st.sampled_from(["", "\ud800", "\udc00x", "\ud83d\ude00", "__metadata__"])
Mutation = Callable[[st.DrawFn, bytes], bytes]


def truncate(draw: st.DrawFn, data: bytes) -> bytes:
    return data[: draw(st.integers(0, len(data) - 1))]


def overwrite_byte(draw: st.DrawFn, data: bytes) -> bytes:
    at = draw(st.integers(0, len(data) - 1))
    return data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]


def append_bytes(draw: st.DrawFn, data: bytes) -> bytes:
    return data + draw(st.binary(min_size=1, max_size=8))


def shift_header_length(draw: st.DrawFn, data: bytes) -> bytes:
    shift: int = draw(st.sampled_from([*range(-16, 0), *range(1, 17)]))
    return max(header_length(data) + shift, 0).to_bytes(8, "little") + data[8:]


def garbage_header(draw: st.DrawFn, data: bytes) -> bytes:
    raw = draw(st.binary(max_size=24) | st.text(max_size=24).map(str.encode))
    return with_header(raw, split(data)[1])


def edit_header(draw: st.DrawFn, data: bytes, change: str) -> bytes:
    """One change to the header's JSON: white space around it, an entry's field (set, gone,
    twice, added), its shape written otherwise, its name, the tensor twice, the metadata."""
    header, section = split(data)
    if change == "space":  # where the library's own padding goes, and before
        space = st.sampled_from([" ", "\n", "\t", "\r", "\x0c", "\ufeff"])
        return with_header(f"{draw(space)}{json.dumps(header)}{draw(space)}".encode(), section)
    members = [(k, v) for k, v in header.items() if k != "__metadata__"]
    empty = [(k, v) for k, v in members if 0 in v["shape"]]
    # An empty tensor's shape can be written in the most ways.
    pool = empty if change == "same size shape" and empty else members
    name, entry = draw(st.sampled_from(pool)) if pool else ("x", {})
    entry = dict(entry)
    members = [(k, v) for k, v in members if k != name]
    field = draw(st.sampled_from(["dtype", "shape", "data_offsets"]))
    written: object = entry
    if change == "set":
        entry[field] = draw(field_values)
    elif change == "drop":
        entry.pop(field, None)
    elif change == "field twice":
        written = Pairs((*entry.items(), (field, draw(field_values))))
    elif change == "extra field":
        entry[draw(st.text(max_size=3))] = draw(odd_tokens | json_values)
    elif change == "same size shape":
        entry["shape"] = draw(same_size_shapes(entry.get("shape", [])))
    elif change == "rename":
        name = draw(st.sampled_from(["", name])) + draw(name_suffixes)
    elif change == "tensor twice":
        members.append((name, draw(st.sampled_from([dict(entry), {**entry, "shape": [0]}]))))
    members.insert(draw(st.integers(0, len(members))), (name, written))
    if change == "metadata":
        members.append(("__metadata__", draw(odd_metadata)))
    elif "__metadata__" in header:
        members.append(("__metadata__", header["__metadata__"]))
    return with_header(Pairs(tuple(members)), section)


def same_size_shapes(shape: list[int]) -> st.SearchStrategy[object]:
    """Shapes of as many elements as `shape`, some written in ways only Python's json takes."""
    if 0 in shape:
        return st.sampled_from(
            [Raw("[-0]"), [2**64 - 1, 0], [2**64, 0], [2**32, 2**32, 0], [2**32, 0, 2**32]]
        )
    return st.sampled_from([[*shape, 1], [1, *shape], Raw(json.dumps([*shape, 1.0]))])


# Edits that keep the data layout: the file may stay valid, which is where readers part.
REWRITES = ["space", "extra field", "same size shape", "rename", "tensor twice", "metadata"]
CORRUPTIONS: list[Mutation] = [
    truncate,
    overwrite_byte,
    append_bytes,
    shift_header_length,
    garbage_header,
    *(functools.partial(edit_header, change=c) for c in ["set", "drop", "field twice"]),
]


@st.composite
def corrupted_files(draw: st.DrawFn) -> bytes:
    corrupt: Mutation = draw(st.sampled_from(CORRUPTIONS))
    return corrupt(draw, draw(library_files()))


@st.composite
def rewritten_files(draw: st.DrawFn) -> bytes:
    return edit_header(draw, draw(library_files()), draw(st.sampled_from(REWRITES)))


# --- the properties ------------------------------------------------------------------------


@FAST
@given(library_files())
def test_files_the_library_writes_are_read_alike_or_refused_by_policy(data: bytes) -> None:
    assert library_entries(data) is not None
    assert_agrees_with_library(data)


@FAST
@given(corrupted_files())
def test_corrupted_files_are_refused_whenever_the_library_refuses_them(data: bytes) -> None:
    assert_agrees_with_library(data, ANY_DTYPE)


@settings(FAST, max_examples=300)
@given(rewritten_files())
def test_rewritten_headers_are_read_as_the_library_reads_them(data: bytes) -> None:
    assert_agrees_with_library(data, ANY_DTYPE)


F64_NAN = struct.pack("<d", float("nan"))


@pytest.mark.parametrize(
    "data",
    [
        with_header(b' {"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', b"\0" * 4),
        with_header(b'{"__metadata__":null}', b""),
        with_header(b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":NaN}}', b"\0" * 4),
        with_header(b'{"a":{"dtype":"F32","shape":[-0],"data_offsets":[0,0]}}', b""),
        with_header(b'{"a":{"dtype":"F32","shape":[2,0],"data_offsets":[0,0]}}', b""),
        with_header(
            b'{"a":{"dtype":"F32","shape":[4294967296,4294967296,0],"data_offsets":[0,0]}}', b""
        ),
        with_header(b'{"__metadata__":{"k":"\\udc00"}}', b""),
        with_header(b'{"\\ud800":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', b"\0" * 4),
        with_header('{"a":{}}'.encode("utf-16-le"), b""),
        with_header(b'{"x":[' + b"1" * 5000 + b"]}", b""),
        with_header(b'{"a":{"dtype":"F64","shape":[],"data_offsets":[0,8]}}', F64_NAN),
    ],
    ids=[
        "leading space",
        "null metadata",
        "NaN literal",
        "-0 as a size",
        "zero-size tensor",
        "element count overflows before a 0",
        "lone surrogate in metadata",
        "lone surrogate in a name",
        "UTF-16 header",
        "5,000-digit number",
        "F64 NaN",
    ],
)
def test_corner_cases_agree_with_the_library(data: bytes) -> None:
    assert_agrees_with_library(data, ANY_DTYPE)


# --- adapters that fit the base ------------------------------------------------------------

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@pytest.fixture(scope="module")
def base_shapes() -> Shapes:
    base = build_base(tiny_llama_config(), seed=0)
    return {k: tuple(v.shape) for k, v in base.state_dict().items()}


def peft_config(rank: int, targets: list[str]) -> bytes:
    return json.dumps(
        {"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": targets}
    ).encode()


@st.composite
def fitting_adapters(draw: st.DrawFn, shapes: Shapes) -> tuple[bytes, bytes, str | None]:
    """A config and weights that fit the base, and the policy that must refuse them, if any."""
    rank = draw(st.integers(1, 4))
    targets = draw(st.lists(st.sampled_from(PROJECTIONS), min_size=1, max_size=3, unique=True))
    modules = [m.removesuffix(".weight") for m in shapes if m.rsplit(".", 2)[-2] in targets]
    chosen = draw(st.lists(st.sampled_from(modules), min_size=1, unique=True))
    dtype = draw(st.sampled_from(["F32", "F16", "BF16", "F64"]))
    poison = draw(st.sampled_from([None, None, float("nan"), float("-inf")]))
    tensors = {}
    for i, module in enumerate(chosen):
        out_features, in_features = shapes[f"{module}.weight"]
        prefix = f"base_model.model.{module}"
        tensors[f"{prefix}.lora_A.weight"] = make_tensor(dtype, (rank, in_features), i, None)
        tensors[f"{prefix}.lora_B.weight"] = make_tensor(dtype, (out_features, rank), i, poison)
    weights = save_with_header_length(tensors, {"format": "pt"}, draw(header_lows))
    policy = "has dtype 'F64'" if dtype == "F64" else None if poison is None else "NaN or Inf"
    return peft_config(rank, targets), weights, policy


@settings(FAST, max_examples=40)
@given(data=st.data())
def test_adapters_the_library_loads_that_fit_the_base_are_accepted(
    data: st.DataObject, base_shapes: Shapes
) -> None:
    config, weights, policy = data.draw(fitting_adapters(base_shapes))
    assert library_entries(weights) is not None
    if policy is None:
        assert validate_adapter(config, weights, base_shapes, LIMITS).modules
    else:
        with pytest.raises(InvalidArgument, match=policy):
            validate_adapter(config, weights, base_shapes, LIMITS)
