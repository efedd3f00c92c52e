"""Bearer tokens → principals. The table holds sha256 digests of tokens, never the tokens.

Tokens file (JSON), given by --tokens-file or MINT_TOKENS_FILE:
  {"tokens": [{"sha256": "<hex of sha256(token)>", "principal": "alice",
               "tenants": ["acme"], "admin": false},
              {"sha256": "<...>", "principal": "router", "service": true},
              {"sha256": "<...>", "principal": "evaluator", "tenants": ["*"],
               "platform": true}]}
`python -m services.registry hash-token TOKEN` prints the digest for a token.
Only a `"platform": true` principal (the evaluator worker, streams/evaluator) records
platform evaluations: the flag comes from this table, never from a request.

The file is read again when it changes (checked at most every `reload_s` on the next
call or metrics scrape), so a token removed from it is refused from then on without a
restart. A file that no longer parses leaves the last good table in force, and says so in
the log and in `mint_tokens_file_rejected`.

A service (the router) calling another MinT server on a caller's behalf (a node) names
that caller in metadata, which the server (`OnBehalf`) trusts only from a service: a
token whose entry says `"service": true`, or a client certificate naming a trusted peer.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mint.domain.errors import Unauthenticated
from mint.registry import Principal

log = logging.getLogger(__name__)
Metadata = Sequence[tuple[str, str | bytes]]
CALLER = "x-mint-caller"  # the principal a service acts for
CALLER_TENANTS = "x-mint-caller-tenants"  # its tenants, comma-separated
RELOAD_S = 5.0  # how often the tokens file is checked for changes


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def on_behalf_of(service_token: str | None, caller: Principal) -> list[tuple[str, str]]:
    """The metadata a service sends to act for `caller` (no token: its client
    certificate is its credential)."""
    names = [(CALLER, caller.name), (CALLER_TENANTS, ",".join(sorted(caller.tenants)))]
    return [("authorization", f"Bearer {service_token}"), *names] if service_token else names


class TokenTable:
    def __init__(self, entries: Iterable[tuple[str, Principal]]) -> None:
        self._by_digest = dict(entries)
        self._source: _Source | None = None

    @classmethod
    def from_file(cls, path: Path, reload_s: float = RELOAD_S) -> TokenTable:
        """The table in `path`, read again when the file changes (0: never)."""
        source = _Source(path, reload_s)
        table = cls(source.read())
        table._source = source if reload_s > 0 else None
        return table

    @property
    def reload_failures(self) -> int:
        return self._source.failures if self._source else 0

    @property
    def rejected(self) -> bool:
        """True while the file on disk does not parse (the last good table is in force)."""
        return self._source.rejected if self._source else False

    def authenticate(
        self, metadata: Metadata, peer_names: frozenset[str] = frozenset()
    ) -> Principal:
        """The caller its token names (certificates name no caller here: `peer_names` is
        accepted so that every authenticator has the same shape)."""
        header = _value(metadata, "authorization")
        if header is None:
            raise Unauthenticated("missing `authorization: Bearer <token>` metadata")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("authorization metadata must be `Bearer <token>`")
        digest = token_digest(token.strip())
        for known, principal in self._current().items():
            if hmac.compare_digest(known, digest):
                return principal
        raise Unauthenticated("unknown or revoked token; use a token the operator issued")

    def authenticate_on_behalf(self, metadata: Metadata) -> Principal:
        """For servers that a service fronts (the nodes): a service's call acts for the
        caller it names; any other token acts for itself, whatever caller it names."""
        principal = self.authenticate(metadata)
        return named_caller(metadata) if principal.service else principal

    def refresh(self) -> None:
        """Take the file's tokens if it changed (checked at most every `reload_s`)."""
        if self._source is not None:
            fresh = self._source.changed()
            if fresh is not None:
                self._by_digest = dict(fresh)

    def _current(self) -> dict[str, Principal]:
        self.refresh()
        return self._by_digest


@dataclass(frozen=True)
class OnBehalf:
    """How a server that a service fronts (a node) authenticates a call: a caller whose
    verified client certificate names one of `trusted_peers` is that service (the router,
    by its mutual-TLS identity) and acts for the caller it names, without a token; any
    other caller needs a token, as `TokenTable.authenticate_on_behalf` checks it."""

    tokens: TokenTable
    trusted_peers: frozenset[str] = frozenset()

    def __call__(self, metadata: Metadata, peer_names: frozenset[str] = frozenset()) -> Principal:
        if peer_names & self.trusted_peers:
            return named_caller(metadata)
        if peer_names and _value(metadata, "authorization") is None:
            raise Unauthenticated(
                f"the client certificate names {', '.join(sorted(peer_names))}, which this "
                "server does not trust as a service; send a token, or use the router's "
                "certificate"
            )
        return self.tokens.authenticate_on_behalf(metadata)


def named_caller(metadata: Metadata) -> Principal:
    """The caller a service names in `metadata` (trusted only once the service is)."""
    name = _value(metadata, CALLER)
    if not name:
        raise Unauthenticated(f"a service must name the caller it acts for (`{CALLER}` metadata)")
    tenants = _value(metadata, CALLER_TENANTS) or ""
    return Principal(name, frozenset(t for t in tenants.split(",") if t))


class TokenMetrics(Collector):
    """`mint_tokens_reload_failures_total` and `mint_tokens_file_rejected` of a table,
    for a process's Prometheus registry."""

    def __init__(self, tokens: TokenTable) -> None:
        self.tokens = tokens

    def collect(self) -> Iterator[Metric]:
        self.tokens.refresh()  # a scrape finds a broken file even while no call comes
        yield CounterMetricFamily(
            "mint_tokens_reload_failures",
            "Times the changed tokens file could not be read or parsed",
            value=self.tokens.reload_failures,
        )
        yield GaugeMetricFamily(
            "mint_tokens_file_rejected",
            "1 while the tokens file on disk is rejected and the last good table serves",
            value=int(self.tokens.rejected),
        )


class _Source:
    """The tokens file and what was last read from it. The file is recognised by its
    resolved path, inode, size and mtime: Kubernetes updates a mounted Secret by pointing
    a `..data` symlink at a new directory, which changes the resolved path and inode."""

    def __init__(self, path: Path, reload_s: float) -> None:
        self.path, self.reload_s = path, reload_s
        self.failures, self.rejected = 0, False
        self._seen: tuple[object, ...] | None = None
        self._rejected: tuple[object, ...] | None = ()  # the last version refused (none yet)
        self._next_check = time.monotonic() + reload_s
        self._lock = threading.Lock()

    def read(self) -> list[tuple[str, Principal]]:
        """The entries now in the file; raises ValueError saying what is wrong."""
        seen = self._stamp()
        try:
            doc = json.loads(self.path.read_text())
            entries = [(_digest(e), _principal(e)) for e in doc["tokens"]]
        except KeyError as exc:
            raise self._invalid(f"no {exc} field") from exc
        except OSError as exc:
            raise self._invalid(str(exc.strerror)) from exc
        except (ValueError, TypeError) as exc:
            raise self._invalid(str(exc)) from exc
        self._seen = seen
        return entries

    def _invalid(self, problem: str) -> ValueError:
        return ValueError(
            f"tokens file {self.path}: {problem}; it must be JSON like "
            '{"tokens": [{"sha256": "<hex>", "principal": "<name>", "tenants": ["<tenant>"]}]}'
        )

    def changed(self) -> list[tuple[str, Principal]] | None:
        """The new entries if the file changed since it was last read (checked at most
        every `reload_s`, by one caller at a time), else None."""
        now = time.monotonic()
        if now < self._next_check or not self._lock.acquire(blocking=False):
            return None
        try:
            self._next_check = now + self.reload_s
            stamp = self._stamp()
            if stamp in (self._seen, self._rejected):  # unchanged, or known to be bad
                return None
            entries = self.read()
        except ValueError as exc:
            self.failures += 1
            self._rejected, self.rejected = stamp, True
            log.error("keeping the tokens last read: %s", exc)
            return None
        finally:
            self._lock.release()
        self._rejected, self.rejected = (), False
        log.info("tokens file %s reloaded: %d tokens", self.path, len(entries))
        return entries

    def _stamp(self) -> tuple[object, ...] | None:
        try:
            real = os.path.realpath(self.path)
            st = os.stat(real)
        except OSError:
            return None  # gone: read() says so
        return real, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _value(metadata: Metadata, key: str) -> str | None:
    value = next((v for k, v in metadata if k == key), None)
    return value.decode() if isinstance(value, bytes) else value


def _digest(entry: dict[str, object]) -> str:
    """A token's sha256 as the table holds it: 64 lower-case hex digits, or no token
    could ever match it (a typo there would lock its principal out in silence)."""
    digest = str(entry["sha256"])
    if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
        raise ValueError(
            f"the sha256 of {entry.get('principal')!r} is {digest!r}, not 64 lower-case hex "
            "digits: write hashlib.sha256(token.encode()).hexdigest()"
        )
    return digest


def _principal(entry: dict[str, object]) -> Principal:
    tenants = entry.get("tenants", [])
    if not isinstance(tenants, list) or not all(isinstance(t, str) for t in tenants):
        raise ValueError(f"the tenants of {entry.get('principal')!r} must be a list")
    return Principal(
        str(entry["principal"]),
        frozenset(tenants),
        entry.get("admin") is True,
        entry.get("service") is True,
        entry.get("platform") is True,
    )
