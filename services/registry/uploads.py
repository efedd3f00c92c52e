"""Receiving PublishRevision uploads without letting them exhaust the registry's memory.

An upload declares its size in its header, and reserves what it will hold (budget.py)
before any body byte is read. While the body arrives it is spooled to a temporary file
(past SPOOL_BYTES), then read back once, in one allocation, for validation and storage.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import IO

import grpc

from mint.domain.errors import Cancelled, InvalidArgument, Unavailable
from mint.v1 import registry_pb2 as pb

SPOOL_BYTES = (
    4 * 1024 * 1024
)  # an upload beyond this waits on disk, not in memory, while it arrives


def receive_weights(parts: Iterator[pb.PublishRevisionRequest], size: int) -> bytes:
    """The `size` weight bytes that follow the header; a longer or shorter body is refused,
    a longer one as soon as it passes `size` (the bytes its reservation covers)."""
    try:
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
            _spool(parts, size, spool)
            spool.seek(0)
            return spool.read(size)  # one allocation of `size`: read straight into it
    except OSError as exc:  # the spool's disk: full, or failing
        raise Unavailable(f"the registry cannot hold the upload now ({exc}); retry") from exc
    except grpc.RpcError as exc:  # the caller went away mid-body: theirs, not a bug here
        raise Cancelled(
            "the upload stopped before its last byte (the caller cancelled, or its deadline "
            "passed); nothing was stored: send it again"
        ) from exc


def _spool(parts: Iterator[pb.PublishRevisionRequest], size: int, spool: IO[bytes]) -> None:
    received = 0
    for part in parts:
        if part.WhichOneof("part") != "weights_chunk":
            raise InvalidArgument("only weights_chunk messages may follow the header")
        received += len(part.weights_chunk)
        if received > size:
            raise InvalidArgument(
                f"more weight bytes than the header's weights_size ({size:,}): "
                "declare the file's exact size"
            )
        spool.write(part.weights_chunk)
    if received != size:
        raise InvalidArgument(
            f"received {received:,} weight bytes but the header declared "
            f"{size:,}: the upload is incomplete"
        )
