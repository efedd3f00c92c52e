"""How every MinT process logs: its own lines at INFO, the libraries' (kafka-python,
urllib3, minio, grpc, ...) at WARNING, repeats of a line collapsed into a count, text or
one JSON object per line, and the id of the RPC being served in each line it causes.

A retry loop against a dead server logs the same line many times a second (a registry
wrote ~230,000 lines a minute during a two-broker outage): the first line of a run is
written at once, the rest of the run within `repeat_window_s` is counted, and one line
"... (repeated N times in 10 s)" follows when the window closes.

Stdlib only: the RPC layer, the services and the back ends all import it."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, TextIO, get_args

# The metadata key of a call's request id: taken from callers, passed on to the servers
# called on their behalf (the router's nodes, the registry's owner replica).
REQUEST_ID_METADATA = "x-request-id"
# Loggers of MinT's own code (`__main__`: a service run as `python -m services.x`).
OWN_LOGGERS = ("mint", "services", "streams", "deploy", "__main__")
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LEVELS: tuple[str, ...] = get_args(LogLevel)
REPEAT_WINDOW_S = 10.0
_REQUEST_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:")
_REQUEST_ID_MAX = 64

_request_id: ContextVar[str | None] = ContextVar("mint_request_id", default=None)


def current_request_id() -> str | None:
    """The id of the request being served on this thread (None outside a request)."""
    return _request_id.get()


@contextlib.contextmanager
def request_scope(request_id: str) -> Iterator[None]:
    """Lines logged inside carry `request_id`; afterwards the thread's is restored (a
    server's worker threads serve one call after another)."""
    token = _request_id.set(request_id)
    try:
        yield
    finally:
        _request_id.reset(token)


def request_id_of(*candidates: object) -> str:
    """The first candidate that is a usable request id (short, no spaces or line breaks,
    which could forge log lines), else a new one."""
    for candidate in candidates:
        if (
            isinstance(candidate, str)
            and 0 < len(candidate) <= _REQUEST_ID_MAX
            and set(candidate) <= _REQUEST_ID_CHARS
        ):
            return candidate
    return uuid.uuid4().hex[:16]


@contextlib.contextmanager
def silenced(*names: str) -> Iterator[None]:
    """The loggers `names` write nothing inside: a check that reports its own failure
    in one line keeps a library's line per failed attempt out of the way."""
    loggers = [logging.getLogger(name) for name in names]
    before = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for logger, level in zip(loggers, before, strict=True):
            logger.setLevel(level)


def outgoing_metadata() -> list[tuple[str, str]]:
    """Metadata that carries the current request id to a server called on its behalf."""
    request_id = _request_id.get()
    return [(REQUEST_ID_METADATA, request_id)] if request_id else []


@dataclass(frozen=True)
class LogConfig:
    level: str = "INFO"  # MinT's own lines
    library_level: str = "WARNING"  # every other logger's
    logger_levels: Mapping[str, str] = field(default_factory=dict)  # by logger name
    format: Literal["text", "json"] = "text"
    repeat_window_s: float = REPEAT_WINDOW_S  # 0: every line written

    @staticmethod
    def parse_logger_levels(text: str) -> dict[str, str]:
        """`kafka=INFO,urllib3=DEBUG` as a mapping; ValueError saying what is wrong."""
        levels: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            name, sep, level = item.partition("=")
            if not sep or not name.strip() or level.strip().upper() not in LEVELS:
                raise ValueError(f"{item!r} is not logger=LEVEL (LEVEL one of {', '.join(LEVELS)})")
            levels[name.strip()] = level.strip().upper()
        return levels


class StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever `sys.stderr` is when a line is written, not the one at start: a
    caller (pytest's capture, a CLI test) may replace it, and close the old one, meanwhile."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _: TextIO) -> None:
        pass


_installed: logging.Handler | None = None
_overridden: list[str] = []


def configure(config: LogConfig | None = None, stream: TextIO | None = None) -> logging.Handler:
    """Log to `stream` (stderr) as `config` says; a second call replaces the first's
    handler and levels. Returns the handler added to the root logger."""
    global _installed
    config = config or LogConfig()
    root = logging.getLogger()
    if _installed is not None:
        root.removeHandler(_installed)
        _installed.close()
    for name in _overridden:
        logging.getLogger(name).setLevel(logging.NOTSET)
    _overridden.clear()
    target = logging.StreamHandler(stream) if stream else StderrHandler()
    target.setFormatter(JsonFormatter() if config.format == "json" else TextFormatter())
    handler: logging.Handler = (
        RepeatCollapser(target, config.repeat_window_s) if config.repeat_window_s > 0 else target
    )
    handler.addFilter(_stamp_request_id)  # on the caller's thread, in its context
    root.addHandler(handler)
    root.setLevel(config.library_level)
    levels = {**dict.fromkeys(OWN_LOGGERS, config.level), **config.logger_levels}
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
        _overridden.append(name)
    _installed = handler
    return handler


def _stamp_request_id(record: logging.LogRecord) -> bool:
    if not hasattr(record, "request_id"):  # a collapsed run's summary keeps its own
        record.request_id = _request_id.get()
    return True


class TextFormatter(logging.Formatter):
    """`2026-12-01 10:00:00,123 WARNING mint.x [4f3a9c...] message`: the request id only
    in lines logged while serving one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(request_tag)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", None)
        record.request_tag = f" [{request_id}]" if request_id else ""
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, thread,
    request_id (while serving a request), exception (a traceback, when there is one)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "thread": record.threadName,
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            line["request_id"] = request_id
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


@dataclass
class _Run:
    """A line written, and its repeats since (counted, not written)."""

    started: float  # the written line's time (record.created)
    repeats: int = 0
    last: logging.LogRecord | None = None
    timer: threading.Timer | None = None


class RepeatCollapser(logging.Handler):
    """Hands records to `target`, except the repeats of a line (same logger, level and
    message template: a retry loop's line whatever its arguments) within `window_s` of
    its first: those are counted, and one summary line ("<the last one> (repeated N
    times in W s)") goes to `target` when the window closes."""

    def __init__(self, target: logging.Handler, window_s: float = REPEAT_WINDOW_S) -> None:
        super().__init__()
        self.target = target
        self.window_s = window_s
        self._runs: OrderedDict[tuple[str, int, str], _Run] = OrderedDict()  # oldest first

    def emit(self, record: logging.LogRecord) -> None:  # under self.lock (Handler.handle)
        self._close_runs_before(record.created - self.window_s)
        key = (record.name, record.levelno, str(record.msg))
        run = self._runs.get(key)
        if run is not None:
            run.repeats += 1
            run.last = record
            if run.timer is None:  # the summary comes even if nothing else is logged
                run.timer = threading.Timer(self.window_s, self._close_run, (key, run))
                run.timer.daemon = True
                run.timer.start()
            return
        self._runs[key] = _Run(record.created)
        self.target.handle(record)

    def _close_runs_before(self, moment: float) -> None:
        while self._runs:
            key, run = next(iter(self._runs.items()))
            if run.started > moment:
                return
            self._end(key, run)

    def _close_run(self, key: tuple[str, int, str], run: _Run) -> None:
        with self.lock or contextlib.nullcontext():
            if self._runs.get(key) is run:
                self._end(key, run)

    def _end(self, key: tuple[str, int, str], run: _Run) -> None:
        del self._runs[key]
        if run.timer is not None:
            run.timer.cancel()
        if run.last is not None and run.repeats:
            try:
                summary = self._summary(run.last, run.repeats)
            except Exception:  # a line whose arguments do not fit its message
                self.handleError(run.last)
                return
            self.target.handle(summary)

    def _summary(self, last: logging.LogRecord, repeats: int) -> logging.LogRecord:
        summary = logging.makeLogRecord(last.__dict__)
        summary.msg = f"{last.getMessage()} (repeated {repeats} times in {self.window_s:g} s)"
        summary.args = None
        summary.exc_info = summary.exc_text = summary.stack_info = None
        return summary

    def flush(self) -> None:
        self.target.flush()

    def close(self) -> None:
        """Write the pending counts (the process is ending) before closing."""
        with self.lock or contextlib.nullcontext():
            while self._runs:
                self._end(*next(iter(self._runs.items())))
        self.target.flush()
        super().close()
