"""S3 calls made for a caller end before its deadline: a hung server gives a retryable
UNAVAILABLE in time, not a read timeout per try (10 s each, three tries)."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from mint.backends.s3 import S3Settings, client, ensure_bucket
from mint.backends.s3_objects import S3Objects
from mint.deadlines import caller_deadline
from mint.domain.errors import Unavailable


@pytest.fixture
def hung_server() -> Iterator[str]:
    """127.0.0.1:port that accepts connections and never answers (a stopped S3)."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for connection in held:
        connection.close()
    listener.close()


def test_a_hung_server_answers_unavailable_before_the_callers_deadline(hung_server: str) -> None:
    objects = S3Objects(client(S3Settings(hung_server, "mint", "secret")), "bucket")
    started = time.monotonic()
    with caller_deadline(2.0), pytest.raises(Unavailable, match="retry"):
        objects.get("adapters/acme/a/1/adapter_model.safetensors")
    assert time.monotonic() - started < 2.0


def test_a_caller_with_time_left_is_served_in_one_try(s3_settings: S3Settings, unique: str) -> None:
    s3 = client(s3_settings)
    ensure_bucket(s3, unique)
    objects = S3Objects(s3, unique)
    with caller_deadline(5.0):
        s3.put_object(unique, "k", io.BytesIO(b"v"), 1)
        assert objects.get("k") == b"v"
        assert objects.get("missing") is None
    no_time = pytest.raises(Unavailable, match="deadline leaves no time for object storage")
    with caller_deadline(0.0), no_time:  # not even tried: not said to be down
        objects.get("k")
