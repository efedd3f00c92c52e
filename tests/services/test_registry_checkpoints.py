"""The registry signs checkpoints when given a key, from the secret setting as Kubernetes
gives it: on its embedded back end (SQLite) and on Kafka (each partition it owns); a key
that is not Ed25519 PEM stops it with a message. tests/audit/test_signed_history.py
covers what the audit concludes from them."""

from __future__ import annotations

import argparse
import json
import uuid
from pathlib import Path

import pytest

from mint import settings
from mint.audit.checkpoints import SignedHistory
from mint.backends.kafka import KafkaConnection
from mint.backends.kafka_checkpoints import KafkaCheckpointStore
from mint.backends.kafka_log import KafkaEventLog
from mint.backends.sqlite_checkpoints import SqliteCheckpointStore
from mint.backends.sqlite_log import SqliteEventLog
from mint.domain import events as ev
from mint.eventlog import checkpoints as cp
from mint.eventlog.port import Metadata
from services.registry.__main__ import _signer, _signing_key
from services.registry.metrics import RegistryMetrics
from services.registry.settings import EmbeddedRegistrySettings as Settings
from services.registry.settings import RegistrySettings
from tests.audit.signing import new_key, private_pem
from tests.keys import kek_file


def _settings(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    key: str | None,
    model: type[Settings] = Settings,
    *more: str,
) -> Settings:
    """The settings a registry pod gets: the key from the Secret, in its variable."""
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"tokens": []}))
    monkeypatch.delenv("MINT_CHECKPOINT_SIGNING_KEY", raising=False)
    if key is not None:
        monkeypatch.setenv("MINT_CHECKPOINT_SIGNING_KEY", key)
    parser = argparse.ArgumentParser()
    settings.add_flags(parser, model)
    flags = ["--tokens-file", str(tokens), "--data-dir", str(tmp_path), *more]
    flags += ["--kek-file", str(kek_file(tmp_path))]
    return settings.load(model, parser.parse_args(flags))


def test_an_embedded_registry_signs_what_it_appended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, public = new_key(tmp_path)
    log = SqliteEventLog(tmp_path / "events.db")
    metrics = RegistryMetrics()
    config = _settings(tmp_path, monkeypatch, private_pem(key))
    signer = _signer(config, _signing_key(config), log, metrics)
    assert signer is not None
    moves = [ev.ChannelMoved("latest", i, 0) for i in (1, 2)]
    log.append("acme/tone", 0, moves, Metadata("alice", "r1"))
    signer.close()  # a stopping registry signs what changed since its last round
    signer.store.close()
    history = SignedHistory(cp.public_keys([public.read_bytes()]))
    history.add(SqliteCheckpointStore(tmp_path / "events.db").read_all())
    for _ in history.watch(log.read_all()):
        pass
    assert history.finish() == []
    assert (history.checkpoints, history.heads["acme/tone"].version) == (1, 2)
    sample = metrics.registry.get_sample_value
    assert sample("mint_registry_checkpoints_signed_total") == 1
    assert sample("mint_registry_checkpoint_failures_total") == 0
    assert (sample("mint_registry_checkpoint_round_timestamp_seconds") or 0) > 0


def test_without_a_key_nothing_is_signed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _settings(tmp_path, monkeypatch, None)
    assert _signing_key(config) is None
    assert _signer(config, None, SqliteEventLog(tmp_path / "events.db")) is None


def test_a_key_that_is_not_ed25519_pem_stops_the_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _settings(tmp_path, monkeypatch, "not a key")
    with pytest.raises(SystemExit, match=r"bad checkpoint_signing_key: .*openssl genpkey"):
        _signing_key(config)  # before any server is asked


def test_a_kafka_registry_signs_the_partitions_it_owns(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kafka: KafkaConnection,
    endpoints: dict[str, str],
) -> None:
    for name, value in endpoints.items():
        monkeypatch.setenv(name, value)
    key, public = new_key(tmp_path)
    topic = f"signs-{uuid.uuid4().hex[:8]}"
    flags = ["--events-topic", topic, "--events-partitions", "2", "--txn-prefix", topic]
    config = _settings(tmp_path, monkeypatch, private_pem(key), RegistrySettings, *flags)
    log = KafkaEventLog(kafka, topic, partitions=2, txn_prefix=topic)  # owns both
    signer = _signer(config, _signing_key(config), log)
    assert signer is not None
    for stream in ("acme/a", "acme/b", "acme/c", "acme/d"):
        log.append(stream, 0, [ev.ChannelMoved("latest", 1, 0)], Metadata("alice", stream))
    signer.close()
    signer.store.close()
    history = SignedHistory(cp.public_keys([public.read_bytes()]))
    history.add(KafkaCheckpointStore(kafka, topic, 2, create=False).read_all())
    for _ in history.watch(log.read_all()):
        pass
    log.close()
    assert history.finish() == []
    assert sorted(history.heads) == ["acme/a", "acme/b", "acme/c", "acme/d"]
    assert set(history.newest) == {0, 1}  # each partition signed on its own
