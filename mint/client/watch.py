"""A tenant's events as the registry appends them, as an iterator (`Watch`) or an async
iterator (`AsyncWatch`).

`scan` reads a tenant's events as stored (envelopes with their hash chain) up to the
log's end, for checks made on the client (`mint audit`).

A watch remembers where it has got to (`offsets`: partition -> the next offset to read),
so a retryable failure (a replica stopping, the log unreachable) reconnects from there
without repeating or skipping an event, for up to `retry_for_s`; and a later watch given
those offsets goes on where this one stopped. `close()` ends the iteration.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

import grpc
import grpc.aio

from mint.eventlog.port import Recorded
from mint.v1 import registry_pb2 as pb

from . import read
from .errors import from_rpc_error
from .retry import Backoff, pause_before_retry
from .types import Event

# Opens the server's stream from the given offsets (a call that can be cancelled).
OpenStream = Callable[[dict[int, int]], Any]


class _Position:
    def __init__(self, from_offsets: Mapping[int, int] | None, retry_for_s: float) -> None:
        self.offsets: dict[int, int] = dict(from_offsets or {})
        self.retry_for_s = retry_for_s
        self.backoff: Backoff | None = None

    def advance(self, message: pb.RecordedEvent) -> pb.RecordedEvent:
        self.backoff = None  # a reconnect that delivers starts its own retry budget
        self.offsets[message.partition] = message.offset + 1
        return message

    def pause_after(self, exc: grpc.RpcError) -> float:
        """How long to wait before reconnecting, or raises: not retryable, or retried
        for long enough."""
        self.backoff = self.backoff or Backoff(self.retry_for_s)
        pause = pause_before_retry(exc, self.backoff)
        if pause is None:
            raise from_rpc_error(exc) from exc
        return pause


class Watch:
    """Iterate it for `Event`s; it blocks until the next one comes. Any thread may
    `close()` it (or leave a `with` block), which ends the iteration."""

    def __init__(
        self, open_stream: OpenStream, from_offsets: Mapping[int, int] | None, retry_for_s: float
    ) -> None:
        self._open = open_stream
        self._position = _Position(from_offsets, retry_for_s)
        self._call: Any = None
        self._closed = False
        self._lock = threading.Lock()

    @property
    def offsets(self) -> dict[int, int]:
        """partition -> the next offset: where a later watch should start."""
        return dict(self._position.offsets)

    def __iter__(self) -> Watch:
        return self

    def __next__(self) -> Event:
        while True:
            call = self._current_call()
            try:
                return read.event(self._position.advance(next(call)))
            except StopIteration:
                break  # the server ends a watch only when it is cancelled
            except grpc.RpcError as exc:
                self._call = None
                if self._closed:
                    break
                time.sleep(self._position.pause_after(exc))
        raise StopIteration

    def _current_call(self) -> Any:
        with self._lock:
            if self._closed:
                raise StopIteration
            if self._call is None:
                self._call = self._open(self._position.offsets)
            return self._call

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._call is not None:
                self._call.cancel()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncWatch:
    """`async for event in watch`; `close()` (or leaving `async with`) ends it."""

    def __init__(
        self, open_stream: OpenStream, from_offsets: Mapping[int, int] | None, retry_for_s: float
    ) -> None:
        self._open = open_stream
        self._position = _Position(from_offsets, retry_for_s)
        self._call: Any = None
        self._closed = False

    @property
    def offsets(self) -> dict[int, int]:
        return dict(self._position.offsets)

    def __aiter__(self) -> AsyncWatch:
        return self

    async def __anext__(self) -> Event:
        while not self._closed:
            if self._call is None:
                self._call = self._open(self._position.offsets)
            try:
                message = await self._call.read()
            except asyncio.CancelledError:
                if self._closed:
                    break
                raise
            except grpc.RpcError as exc:
                self._call = None
                if self._closed:
                    break
                await asyncio.sleep(self._position.pause_after(exc))
                continue
            if message is grpc.aio.EOF:
                break
            return read.event(self._position.advance(message))
        raise StopAsyncIteration

    def close(self) -> None:
        self._closed = True
        if self._call is not None:
            self._call.cancel()

    async def __aenter__(self) -> AsyncWatch:
        return self

    async def __aexit__(self, *_: object) -> None:
        self.close()


def scan(open_stream: OpenStream, retry_for_s: float) -> Iterator[Recorded]:
    """The events `open_stream` gives (opened with `until_end`) as stored, until the
    server ends the stream; a retryable failure reconnects from the next offsets, as a
    watch does. Closing the iterator cancels the call."""
    position = _Position(None, retry_for_s)
    while True:
        call = open_stream(position.offsets)
        try:
            for message in call:
                yield read.recorded(position.advance(message))
            return
        except grpc.RpcError as exc:
            pause = position.pause_after(exc)
        finally:
            call.cancel()
        time.sleep(pause)


async def scan_async(open_stream: OpenStream, retry_for_s: float) -> AsyncIterator[Recorded]:
    """`scan` for grpc.aio: `open_stream` gives an aio stream call."""
    position = _Position(None, retry_for_s)
    while True:
        call = open_stream(position.offsets)
        try:
            while (message := await call.read()) is not grpc.aio.EOF:
                yield read.recorded(position.advance(message))
            return
        except grpc.RpcError as exc:
            pause = position.pause_after(exc)
        finally:
            call.cancel()
        await asyncio.sleep(pause)
