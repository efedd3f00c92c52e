"""How every MinT process logs (mint/logs.py): kafka-python's INFO lines are not written
by default, a line repeated by a retry loop is written once and then counted, and JSON
lines carry the request id of the RPC that logged them."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

import grpc
import pytest
from kafka import KafkaConsumer

from deploy.local.stack import free_ports
from mint import logs
from mint.backends.kafka import KafkaConnection, broker_ids
from mint.v1 import registry_pb2
from tests.logged_rpc import ALICE, captured_logs, create, said, serve_logged


def written(config: logs.LogConfig, action: Callable[[], None]) -> list[str]:
    with captured_logs(config) as stream:
        action()
    return stream.getvalue().splitlines()


def test_kafka_python_info_lines_are_not_written_by_default(kafka: KafkaConnection) -> None:
    def talk_to_kafka() -> None:
        said.info("asking for the brokers")
        assert broker_ids(kafka)  # kafka-python logs its connections at INFO

    by_default = written(logs.LogConfig(), talk_to_kafka)
    assert any("mint.tests.logged asking for the brokers" in line for line in by_default)
    assert not [line for line in by_default if " kafka." in line], by_default
    # ...while they are there to be shown (so the absence above means something)
    asked = written(logs.LogConfig(logger_levels={"kafka": "INFO"}), talk_to_kafka)
    assert any(" INFO kafka." in line for line in asked), asked


class Lines(logging.Handler):
    """Formatted lines, and an event set when a summary of repeats arrives."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.summary = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        if "repeated" in record.getMessage():
            self.summary.set()


def record(message: str, *args: object, at: float, level: int = logging.ERROR) -> logging.LogRecord:
    line = logging.LogRecord("kafka.net", level, __file__, 1, message, args, None)
    line.created = at
    return line


def test_repeats_within_the_window_collapse_into_one_line_with_a_count() -> None:
    lines = Lines()
    collapser = logs.RepeatCollapser(lines, window_s=10)
    now = time.time()  # the records' times: a window's count is due 10 s after its first
    retrying = "broker %d unreachable; retrying in %.2f s"
    for i in range(1000):  # a retry loop: the same line but its backoff, 100 a second
        collapser.handle(record(retrying, 1, 0.1 + i / 1000, at=now + i * 0.01))
    collapser.handle(record("something else", at=now + 5))
    for partition in (0, 1):  # lines about different things stay apart
        collapser.handle(record("partition %d: state rebuilt", partition, at=now + 5))
    collapser.handle(record(retrying, 2, 0.1, at=now + 5))
    collapser.handle(record(retrying, 1, 0.1, at=now, level=logging.WARNING))
    assert lines.lines == [
        "broker 1 unreachable; retrying in 0.10 s",
        "something else",
        "partition 0: state rebuilt",
        "partition 1: state rebuilt",
        "broker 2 unreachable; retrying in 0.10 s",
        "broker 1 unreachable; retrying in 0.10 s",  # another level is another line
    ]
    collapser.handle(record(retrying, 1, 0.5, at=now + 11))  # the first window closed
    assert lines.lines[6:] == [
        "broker 1 unreachable; retrying in 1.10 s (repeated 999 times in 10 s)",  # the last
        "broker 1 unreachable; retrying in 0.50 s",  # a new window starts with the line
    ]
    collapser.close()
    assert lines.lines[8:] == []  # nothing else was pending


def test_a_kafka_client_retrying_a_dead_broker_writes_a_few_lines_not_hundreds(
    nobody: str,
) -> None:
    def retry_for_a_second() -> None:
        consumer = KafkaConsumer(
            bootstrap_servers=nobody,
            api_version=(3, 0),  # no version probe: straight to the retry loop
            reconnect_backoff_ms=5,
            reconnect_backoff_max_ms=10,
        )
        deadline = time.monotonic() + 1
        while time.monotonic() < deadline:
            consumer.poll(timeout_ms=100)
        consumer.close()

    every = written(logs.LogConfig(repeat_window_s=0), retry_for_a_second)
    collapsed = written(logs.LogConfig(), retry_for_a_second)
    assert len(every) > 40, every[:10]  # kafka-python's lines per attempt, at ERROR
    assert len(collapsed) <= 20 and 4 * len(collapsed) < len(every), collapsed
    assert any("(repeated" in line for line in collapsed), collapsed


@pytest.fixture
def nobody() -> str:
    """A 127.0.0.1 address where nothing listens."""
    return f"127.0.0.1:{free_ports(1)[0]}"


def test_a_count_is_written_when_the_window_closes_without_another_line() -> None:
    lines = Lines()
    collapser = logs.RepeatCollapser(lines, window_s=0.2)
    for _ in range(5):
        collapser.handle(logging.makeLogRecord({"msg": "S3 unreachable", "name": "minio"}))
    assert lines.summary.wait(timeout=10), lines.lines
    assert lines.lines == ["S3 unreachable", "S3 unreachable (repeated 4 times in 0.2 s)"]


def test_closing_writes_the_pending_count() -> None:
    lines = Lines()
    collapser = logs.RepeatCollapser(lines, window_s=60)
    for _ in range(3):
        collapser.handle(logging.makeLogRecord({"msg": "retrying", "name": "mint.x"}))
    collapser.close()  # the process ends: the count is not lost
    assert lines.lines == ["retrying", "retrying (repeated 2 times in 60 s)"]


def test_json_lines_carry_the_request_id_of_the_rpc_that_logged_them() -> None:
    server = serve_logged()
    with (
        captured_logs(logs.LogConfig(format="json")) as stream,
        grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel,
    ):

        def call(name: str, request_id: str = "", *metadata: tuple[str, str]) -> None:
            request = registry_pb2.CreateAdapterRequest(request_id=request_id)
            request.ref.name = name
            create(channel)(request, metadata=(ALICE, *metadata), timeout=10)

        try:
            call("sent", "", ("x-request-id", "trace-7f3a"))
            call("command", "cmd-42")  # a command's own request id
            call("either", "cmd-43", ("x-request-id", "trace-0001"))  # the caller's wins
            call("bad", "", ("x-request-id", "not one; " + "x" * 80))  # not used: a new one
            call("none")
            said.info("outside any call")
        finally:
            server.stop(0)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    by_message = {line["message"]: line for line in lines if line["logger"] == said.name}
    assert by_message["creating sent"]["request_id"] == "trace-7f3a"
    assert by_message["creating command"]["request_id"] == "cmd-42"
    assert by_message["creating either"]["request_id"] == "trace-0001"
    generated = {by_message[f"creating {n}"]["request_id"] for n in ("bad", "none")}
    assert len(generated) == 2 and all(len(g) == 16 for g in generated)
    assert "request_id" not in by_message["outside any call"]
    assert by_message["creating sent"]["level"] == "INFO" and by_message["creating sent"]["time"]


def test_the_request_id_is_passed_on_to_servers_called_for_the_request() -> None:
    assert logs.outgoing_metadata() == []
    with logs.request_scope("abc"):
        assert logs.outgoing_metadata() == [("x-request-id", "abc")]
    assert logs.current_request_id() is None


def test_a_bad_logger_level_is_refused_with_how_to_write_it() -> None:
    assert logs.LogConfig.parse_logger_levels("kafka=info, urllib3=DEBUG") == {
        "kafka": "INFO",
        "urllib3": "DEBUG",
    }
    with pytest.raises(ValueError, match="is not logger=LEVEL"):
        logs.LogConfig.parse_logger_levels("kafka:INFO")


def test_text_lines_name_the_logger_and_the_request_id_while_serving_one() -> None:
    with captured_logs(logs.LogConfig()) as stream:
        said.warning("outside")
        with logs.request_scope("req-9"):
            said.warning("inside")
    outside, inside = stream.getvalue().splitlines()
    assert outside.endswith(" WARNING mint.tests.logged outside")
    assert inside.endswith(" WARNING mint.tests.logged [req-9] inside")
