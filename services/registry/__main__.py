"""Run the MinT registry gRPC service.

  python -m services.registry serve --tokens-file tokens.json [--port 50051]
  python -m services.registry serve --backend embedded --data-dir .mint/registry ...
  python -m services.registry hash-token TOKEN     (digest for the tokens file)

The Kafka back end (the default) needs --kafka-bootstrap and the S3 settings (or their
MINT_* variables, as `python -m deploy.local env` prints them), and serves ListAdapters
from the projector's catalog (--projection-bucket, --projection-prefix); `serve --help`
lists every setting (the KEK: --kek-file). Tokens: see mint/rpc/auth.py.
"""

from __future__ import annotations

import argparse
import logging
import threading
from collections.abc import Callable, Iterable

from mint import cli, settings, startup
from mint.backends.kafka_log import KafkaEventLog
from mint.backends.kafka_ownership import GroupOwnership
from mint.backends.kafka_residency import KafkaErasureNotices
from mint.blobs.port import BlobStore
from mint.blobs.sealing import Kek
from mint.catalog.port import AdapterCatalog
from mint.domain.errors import DomainError
from mint.eventlog.checkpoints import CheckpointStore, SigningKey
from mint.eventlog.port import EventLog
from mint.eventlog.signer import CheckpointSigner
from mint.probes import serve_metrics
from mint.registry import Registry
from mint.rpc.auth import token_digest

from .forwarding import ReadForwarder
from .metrics import RegistryMetrics
from .server import build_server
from .settings import EmbeddedRegistrySettings, RegistrySettings

log = logging.getLogger(__name__)
ERASURE_SWEEP_S = 30.0  # between two looks for erasures a crash left unfinished


def _backends(config: EmbeddedRegistrySettings) -> tuple[EventLog, BlobStore, AdapterCatalog]:
    if not isinstance(config, RegistrySettings):
        from mint.backends.local_blobs import LocalBlobStore, local_kek
        from mint.backends.sqlite_log import SqliteEventLog
        from mint.catalog.log_scan import LogScanCatalog

        embedded = SqliteEventLog(config.data_dir / "events.db")
        kek = local_kek(config.kek_file or config.data_dir / "kek")
        return embedded, LocalBlobStore(config.data_dir, kek), LogScanCatalog(embedded)
    from mint.backends.s3 import client
    from mint.backends.s3_blobs import S3BlobStore
    from mint.backends.s3_objects import S3Objects
    from mint.catalog.projection import ProjectionCatalog

    # Partitions are owned as the consumer group assigns them (see kafka_ownership.py).
    log = KafkaEventLog(
        config.kafka(),
        config.events_topic,
        config.events_partitions,
        config.replication,
        config.txn_prefix,
        owned=(),
    )
    s3 = client(config.s3())
    projection = S3Objects(s3, config.projection_bucket, config.projection_prefix)
    blobs = S3BlobStore(s3, config.blobs_bucket, Kek.from_file(config.kek_file))
    return log, blobs, ProjectionCatalog(projection)


def _notices(config: EmbeddedRegistrySettings) -> KafkaErasureNotices | None:
    """Where erasures are announced to the nodes and routers (none without Kafka)."""
    if not isinstance(config, RegistrySettings):
        return None
    topics = config.residency_topics()
    topics.create(config.kafka(), config.replication)
    return KafkaErasureNotices(config.kafka(), topics)


def _signing_key(config: EmbeddedRegistrySettings) -> SigningKey | None:
    """The checkpoint signing key, if one is set: read before any server is asked."""
    if config.checkpoint_signing_key is None:
        return None
    try:
        return SigningKey.from_pem(config.checkpoint_signing_key.get_secret_value())
    except DomainError as exc:
        raise SystemExit(
            f"bad checkpoint_signing_key: {exc}; fix --checkpoint-signing-key or "
            "MINT_CHECKPOINT_SIGNING_KEY"
        ) from None


def _signer(
    config: EmbeddedRegistrySettings,
    key: SigningKey | None,
    event_log: EventLog,
    metrics: RegistryMetrics | None = None,
) -> CheckpointSigner | None:
    """Signs checkpoints of the partitions this replica owns, given a signing key."""
    if key is None:
        return None
    store: CheckpointStore
    owned: Callable[[], Iterable[int]]
    if isinstance(event_log, KafkaEventLog) and isinstance(config, RegistrySettings):
        from mint.backends.kafka_checkpoints import KafkaCheckpointStore

        store = KafkaCheckpointStore(
            config.kafka(), config.events_topic, config.events_partitions, config.replication
        )
        owned, name = event_log.owned, config.advertised()
    else:
        from mint.backends.sqlite_checkpoints import SqliteCheckpointStore

        store = SqliteCheckpointStore(config.data_dir / "events.db")
        owned, name = (lambda: (0,)), "embedded"
    observe = metrics.count_checkpoints if metrics is not None else None
    signer = CheckpointSigner(key, store, event_log.read_partition, owned, name, observe)
    signer.start(config.checkpoint_every_s)
    every_s = config.checkpoint_every_s
    log.info("signing checkpoints with key %s every %s s", key.key_id, every_s)
    return signer


def serve(args: argparse.Namespace) -> None:
    model = EmbeddedRegistrySettings if args.backend == "embedded" else RegistrySettings
    config = settings.load(model, args)
    cli.configure(config)
    tokens = startup.load_tokens(config.tokens_file)  # local files first
    startup.require_tls(config.tls_files())
    key = _signing_key(config)
    if isinstance(config, RegistrySettings):
        startup.require_kafka(config, config.startup_timeout_s)
        startup.require_s3(config, config.blobs_bucket, config.startup_timeout_s)
    else:
        startup.require_data_dir(config.data_dir)
    event_log, blobs, catalog = _backends(config)
    ownership = None
    if isinstance(event_log, KafkaEventLog) and isinstance(config, RegistrySettings):
        ownership = GroupOwnership(
            event_log, f"{event_log.txn_prefix}-owners", advertised=config.advertised()
        )
        owned = ownership.wait_until_owning()
        log.info("owning partitions %s of %s", sorted(owned), event_log.topic)
        if missing := ownership.wanted() - owned:
            log.warning(
                "serving before partitions %s were taken: their commands get 'retry' "
                "until they are",
                sorted(missing),
            )
    metrics = RegistryMetrics()
    signer = _signer(config, key, event_log, metrics)
    if isinstance(event_log, KafkaEventLog):
        metrics.count_owned(event_log.owned)
    if config.metrics_port:
        serve_metrics(config.metrics_port, metrics.registry, config.host)  # health: gRPC
    registry = Registry(event_log, blobs, catalog=catalog, notices=_notices(config))
    server, port = build_server(
        registry,
        tokens,
        f"{config.host}:{config.port}",
        max_upload_bytes_in_flight=config.max_upload_bytes_in_flight,
        max_download_bytes_in_flight=config.max_download_bytes_in_flight,
        tls=config.tls_files(),
        health_port=config.health_port,
        drain_s=config.drain_s,
        forwarder=ReadForwarder(config.peer_tls(), config.peer_server_name, metrics)
        if isinstance(config, RegistrySettings)
        else None,
        metrics=metrics,
    )
    print(
        f"registry serving on {config.host}:{port} ({args.backend} back end; "
        f"health on {server.health_port})",
        flush=True,
    )
    stop = cli.stop_on_signals()
    threading.Thread(
        target=_sweep_erasures, args=(registry, stop), name="erasure-sweep", daemon=True
    ).start()
    stop.wait()
    server.stop(grace=config.grace_s).wait()
    if signer is not None:
        signer.close()  # while it owns its partitions: what changed last is signed too
        signer.store.close()
    if ownership is not None:
        ownership.close()
    catalog.close()
    event_log.close()


def _sweep_erasures(registry: Registry, stop: threading.Event) -> None:
    """Finish, now and then, erasures a crash interrupted between the tombstone and the
    key's destruction (see Registry.finish_erasures)."""
    while not stop.wait(ERASURE_SWEEP_S):
        try:
            registry.finish_erasures()
        except DomainError as exc:  # S3 or Kafka away for now: the next round retries
            log.warning("erasure sweep failed: %s", exc)


@cli.entry_point
def main() -> None:
    parser = cli.parser("python -m services.registry", __doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = cli.command(commands, "serve", "run the gRPC service")
    run.add_argument(
        "--backend",
        choices=["kafka", "embedded"],
        default="kafka",
        help="kafka: Kafka and S3 (the default); embedded: SQLite and a folder (--data-dir)",
    )
    settings.add_flags(run, RegistrySettings)
    digest = cli.command(commands, "hash-token", "print the sha256 to put in a tokens file")
    digest.add_argument("token")
    args = parser.parse_args()
    if args.command == "hash-token":
        print(token_digest(args.token))
    else:
        serve(args)


if __name__ == "__main__":
    main()
