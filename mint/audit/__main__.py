"""Audit the adapter log: verify it, replay it to a moment, explain an adapter.

  python -m mint.audit verify                          chains + blobs; exit 1 on problems
  python -m mint.audit --projection-bucket P verify    also the projection's revision files
  python -m mint.audit replay --as-of 2026-11-29T15:00:00Z [--json]
  python -m mint.audit replay --as-of-offsets 0:120,1:98 [--json]
  python -m mint.audit provenance acme/tone[@3] [--json | --svg lineage.svg]

Back ends: --backend kafka (MINT_KAFKA_BOOTSTRAP, MINT_S3_* as `python -m deploy.local
env` prints them) or --backend embedded --data-dir DIR (the demo's .mint/demo).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path

from mint.blobs.port import BlobStore
from mint.domain.errors import DomainError
from mint.domain.names import AdapterRef
from mint.eventlog.port import EventLog

from . import provenance, replay, verify


def _open(args: argparse.Namespace) -> tuple[EventLog, BlobStore, verify.Objects | None]:
    if args.backend == "embedded":
        from mint.backends.local_blobs import LocalBlobStore
        from mint.backends.sqlite_log import SqliteEventLog

        if args.projection_bucket:
            raise SystemExit("--projection-bucket needs --backend kafka (the projection is in S3)")
        return SqliteEventLog(args.data_dir / "events.db"), LocalBlobStore(args.data_dir), None
    from mint.backends.kafka_log import KafkaEventLog
    from mint.backends.s3 import client
    from mint.backends.s3_blobs import S3BlobStore
    from mint.backends.s3_objects import S3Objects
    from mint.backends.settings import servers_from_env

    servers = servers_from_env()
    log = KafkaEventLog(servers.kafka_bootstrap, args.topic, args.partitions, owned=())
    s3 = client(servers.s3)
    projection = None
    if args.projection_bucket:
        projection = S3Objects(s3, args.projection_bucket, args.projection_prefix)
    return log, S3BlobStore(s3, args.bucket), projection


def _offsets(text: str) -> dict[int, int]:
    try:
        return {int(p): int(o) for p, o in (pair.split(":") for pair in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(
            "expected partition:offset[,partition:offset...]"
        ) from None


def _time(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            "expected an ISO time, e.g. 2026-11-29T15:00:00Z"
        ) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mint.audit",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--backend", choices=["kafka", "embedded"], default="kafka")
    parser.add_argument("--data-dir", type=Path, default=Path(".mint/demo"))
    parser.add_argument("--topic", default="mint.adapter-events")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--bucket", default="mint", help="the registry's blob bucket")
    parser.add_argument(
        "--projection-bucket",
        help="verify also checks the projection's revision files here against the log",
    )
    parser.add_argument("--projection-prefix", default="", help="key prefix of the projection")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "verify", help="walk every hash chain, check every blob (and the projection's files)"
    )
    rp = commands.add_parser("replay", help="the registry's state at a moment")
    moment = rp.add_mutually_exclusive_group()
    moment.add_argument("--as-of", type=_time, help="ISO time (events up to it)")
    moment.add_argument("--as-of-offsets", type=_offsets, help="partition:offset,... (before)")
    rp.add_argument("--json", action="store_true")
    pv = commands.add_parser("provenance", help="an adapter's lineage")
    pv.add_argument("adapter", help="tenant/name or tenant/name@revision")
    pv.add_argument("--json", action="store_true")
    pv.add_argument("--svg", type=Path, help="also write the lineage graph here")
    args = parser.parse_args(argv)
    log, blobs, projection = _open(args)
    try:
        if args.command == "verify":
            report = verify.verify(log.read_all(), blobs, projection)
            for problem in report.problems:
                print(f"PROBLEM {problem}")
            projected = (
                f", {report.projection_files_checked} projection files" if projection else ""
            )
            print(
                f"{report.events} events in {report.streams} streams, "
                f"{report.blobs_checked} blobs{projected} checked: "
                f"{'clean' if report.clean else f'{len(report.problems)} problems'}"
            )
            return 0 if report.clean else 1
        if args.command == "replay":
            state = replay.replay(log.read_all(), args.as_of_offsets, args.as_of)
            print(
                json.dumps(replay.to_json(state), indent=2) if args.json else replay.to_table(state)
            )
            return 0
        name, _, rev = args.adapter.partition("@")
        doc = provenance.lineage(log.read_all(), AdapterRef.parse(name), int(rev) if rev else None)
        print(json.dumps(doc, indent=2, default=str) if args.json else provenance.to_text(doc))
        if args.svg:
            args.svg.write_text(provenance.to_svg(doc))
            print(f"lineage graph written to {args.svg}", file=sys.stderr)
        return 0
    except DomainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        log.close()


if __name__ == "__main__":
    sys.exit(main())
