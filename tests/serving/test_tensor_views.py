"""A node reads weights as views of the fetched bytes: the same tensors as the safetensors
library's, and anything that does not read is DataLoss (they are read before their hash
is known, so the bytes may be anything)."""

from __future__ import annotations

import contextlib
import ctypes
import json
import struct

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import load, save

from mint.domain.errors import DataLoss
from mint.serving.loading import tensor_views

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@st.composite
def state_dicts(draw: st.DrawFn) -> dict[str, torch.Tensor]:
    names = draw(st.lists(st.from_regex(r"[a-z][a-z0-9_.]{0,20}", fullmatch=True), max_size=6))
    state = {}
    for i, name in enumerate(dict.fromkeys(names)):
        shape = draw(st.lists(st.integers(0, 5), min_size=1, max_size=3))
        dtype = draw(st.sampled_from(DTYPES))
        state[name] = (torch.arange(int(torch.tensor(shape).prod())) + i).to(dtype).view(shape)
    return state


@settings(max_examples=60, deadline=None)
@given(state_dicts(), st.booleans())
def test_the_views_equal_what_the_library_reads(
    state: dict[str, torch.Tensor], with_metadata: bool
) -> None:
    data = save(state, metadata={"format": "pt"} if with_metadata else None)
    views, expected = tensor_views(data), load(data)
    assert views.keys() == expected.keys()
    for name, tensor in expected.items():
        assert views[name].dtype == tensor.dtype and views[name].shape == tensor.shape
        assert torch.equal(views[name], tensor)


def test_the_views_share_the_bytes_rather_than_copy_them() -> None:
    data = save({"a": torch.ones(64, 64)})
    view = tensor_views(data)["a"]
    first_byte = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value
    assert first_byte is not None
    assert view.data_ptr() == first_byte + 8 + struct.unpack_from("<Q", data)[0]


def _file(header: object, body: bytes = b"\0" * 16) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x05\0\0",
        struct.pack("<Q", 2**40) + b"{}",  # a header longer than the file
        _file([1, 2]),  # not an object
        _file("abc"),
        _file({"a": {"dtype": "F32", "shape": [2**70], "data_offsets": [0, 16]}}),
        b"\x02\0\0\0\0\0\0\0{]",  # not JSON
        _file({"a": {"dtype": "F32", "shape": [8], "data_offsets": [0, 32]}}),  # past the end
        _file({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}}),  # wrong shape
        _file({"a": {"dtype": "F32", "shape": [4], "data_offsets": [-4, 12]}}),
        _file({"a": {"dtype": "I64", "shape": [2], "data_offsets": [0, 16]}}),  # not served
        _file({"a": {"dtype": "F32", "shape": [4]}}),
        _file({"a": "F32"}),
        _file({"a": {"dtype": "F32", "shape": "4", "data_offsets": [0, 16]}}),
        _file({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0]}}),
        _file({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 6]}}),  # not whole
        _file({"a": {"dtype": "F32", "shape": [0], "data_offsets": [8, 0]}}),
    ],
)
def test_bytes_that_do_not_read_are_data_loss(data: bytes) -> None:
    with pytest.raises(DataLoss, match="do not read as safetensors"):
        tensor_views(data)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_altered_bytes_read_alike_or_are_data_loss(data: st.DataObject) -> None:
    """Whatever the bytes, the reader answers with tensors or DataLoss, nothing else."""
    original = bytearray(save({"a": torch.ones(3, 4), "b": torch.zeros(2, dtype=torch.bfloat16)}))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(original) - 1))
        original[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(original)))
    with contextlib.suppress(DataLoss):  # any other exception fails the test
        tensor_views(bytes(original[:cut]))
