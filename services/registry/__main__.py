"""Run the MinT registry gRPC service.

  python -m services.registry serve --backend kafka --port 50051
  python -m services.registry serve --backend embedded --data-dir .mint/registry
  python -m services.registry hash-token TOKEN     (digest for the tokens file)

Kafka and S3 endpoints come from MINT_KAFKA_BOOTSTRAP, MINT_S3_ENDPOINT,
MINT_S3_ACCESS_KEY, MINT_S3_SECRET_KEY (as `python -m deploy.local env` prints them).
Tokens: --tokens-file or MINT_TOKENS_FILE (see services/registry/auth.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from mint import cli
from mint.backends.kafka_log import KafkaEventLog
from mint.backends.kafka_ownership import GroupOwnership
from mint.blobs.port import BlobStore
from mint.eventlog.port import EventLog
from mint.registry import Registry
from mint.rpc.auth import TokenTable, token_digest

from .server import build_server


def _backends(args: argparse.Namespace) -> tuple[EventLog, BlobStore]:
    if args.backend == "embedded":
        from mint.backends.local_blobs import LocalBlobStore
        from mint.backends.sqlite_log import SqliteEventLog

        args.data_dir.mkdir(parents=True, exist_ok=True)
        return SqliteEventLog(args.data_dir / "events.db"), LocalBlobStore(args.data_dir)
    from mint.backends.s3 import client
    from mint.backends.s3_blobs import S3BlobStore
    from mint.backends.settings import servers_from_env

    servers = servers_from_env()
    # Partitions are owned as the consumer group assigns them (see kafka_ownership.py).
    log = KafkaEventLog(
        servers.kafka_bootstrap,
        args.topic,
        args.partitions,
        args.replication,
        args.txn_prefix,
        owned=(),
    )
    s3 = client(servers.s3)
    return log, S3BlobStore(s3, args.bucket)


def serve(args: argparse.Namespace) -> None:
    tokens_file = args.tokens_file or os.environ.get("MINT_TOKENS_FILE")
    if not tokens_file:
        sys.exit("no tokens: pass --tokens-file or set MINT_TOKENS_FILE")
    tokens = TokenTable.from_file(Path(tokens_file))
    event_log, blobs = _backends(args)
    ownership = None
    if isinstance(event_log, KafkaEventLog):
        ownership = GroupOwnership(event_log, f"{args.txn_prefix}-owners")
        owned = ownership.wait_until_owning()
        logging.info("owning partitions %s of %s", sorted(owned), args.topic)
    server, port = build_server(
        Registry(event_log, blobs),
        tokens,
        f"{args.host}:{args.port}",
        max_upload_bytes_in_flight=args.max_upload_bytes_in_flight,
    )
    print(f"registry serving on {args.host}:{port} ({args.backend} back end)", flush=True)
    stop = cli.stop_on_signals()
    stop.wait()
    server.stop(grace=args.grace_s).wait()
    if ownership is not None:
        ownership.close()
    event_log.close()


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of bytes, got {text}")
    return value


def main() -> None:
    parser = cli.parser("python -m services.registry", __doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="run the gRPC service")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=50051, help="0 picks a free port")
    run.add_argument("--backend", choices=["kafka", "embedded"], default="kafka")
    run.add_argument(
        "--data-dir",
        type=Path,
        default=Path(".mint/registry"),
        help="embedded back end: where the SQLite log and blobs live",
    )
    run.add_argument("--topic", default="mint.adapter-events")
    run.add_argument("--partitions", type=int, default=6)
    run.add_argument("--replication", type=int, default=1, help="3 in production")
    run.add_argument(
        "--txn-prefix",
        default="mint-registry",
        help="transactional id prefix; replicas of one registry share it",
    )
    run.add_argument("--bucket", default="mint")
    run.add_argument("--tokens-file", type=Path)
    run.add_argument(
        "--max-upload-bytes-in-flight",
        type=_positive_int,
        help="bytes that concurrent uploads may hold at once; an upload that does not fit "
        "gets RESOURCE_EXHAUSTED (retry later). Default: a quarter of the memory the "
        "process may use, at least one largest upload",
    )
    run.add_argument("--grace-s", type=float, default=10.0, help="drain time on SIGTERM")
    digest = commands.add_parser("hash-token", help="print the sha256 to put in a tokens file")
    digest.add_argument("token")
    args = parser.parse_args()
    if args.command == "hash-token":
        print(token_digest(args.token))
    else:
        serve(args)


if __name__ == "__main__":
    main()
