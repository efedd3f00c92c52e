"""Audit the adapter log: verify it, replay it to a moment, explain an adapter.

  python -m mint.audit verify                          chains + blobs; exit 1 on problems
                                                       (progress on stderr as it goes)
  python -m mint.audit verify --projection-bucket P    also the projection's revision files
  python -m mint.audit replay --as-of 2026-11-29T15:00:00Z [--json]
  python -m mint.audit replay --as-of-offsets 0:120,1:98 [--json]
  python -m mint.audit provenance acme/tone[@3] [--json | --svg lineage.svg]

Back ends: --backend kafka (the default: Kafka, and S3 for `verify`, from flags or the
MINT_* variables `python -m deploy.local env` prints; `verify --help` lists them) or
--backend embedded --data-dir DIR (the demo's .mint/demo).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path

from mint import cli, settings
from mint.blobs.port import BlobStore
from mint.domain.errors import DomainError
from mint.domain.names import AdapterRef
from mint.eventlog.port import EventLog

from . import progress, provenance, replay, verify
from .settings import AuditSettings, AuditVerifySettings


def _log(args: argparse.Namespace) -> EventLog:
    """The log, for `replay` and `provenance`: Kafka only."""
    if args.backend == "embedded":
        from mint.backends.sqlite_log import SqliteEventLog

        return SqliteEventLog(args.data_dir / "events.db")
    from mint.backends.kafka_log import KafkaEventLog

    config = settings.load(AuditSettings, args)
    return KafkaEventLog(config.kafka(), config.events_topic, config.events_partitions, owned=())


def _checked(args: argparse.Namespace) -> tuple[EventLog, BlobStore, verify.Objects | None]:
    """What `verify` checks: the log, the blobs and (given its bucket) the projection."""
    if args.backend == "embedded":
        from mint.backends.local_blobs import LocalBlobStore, local_kek

        return _log(args), LocalBlobStore(args.data_dir, local_kek(args.data_dir / "kek")), None
    from mint.backends.kafka_log import KafkaEventLog
    from mint.backends.s3 import client
    from mint.backends.s3_blobs import S3BlobStore
    from mint.backends.s3_objects import S3Objects

    config = settings.load(AuditVerifySettings, args)
    log = KafkaEventLog(config.kafka(), config.events_topic, config.events_partitions, owned=())
    s3 = client(config.s3())
    projection = None
    if config.projection_bucket:
        projection = S3Objects(s3, config.projection_bucket, config.projection_prefix)
    return log, S3BlobStore(s3, config.blobs_bucket, config.kek()), projection


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


def _verify(args: argparse.Namespace) -> int:
    log, blobs, projection = _checked(args)
    try:
        with progress.shown() as show:  # on stderr: stdout is the report
            report = verify.verify(log.read_all(), blobs, projection, show)
    finally:
        log.close()
    for problem in report.problems:
        print(f"PROBLEM {problem}")
    for erasure in report.erasures:
        print(f"ERASED {erasure}")
    projected = f", {report.projection_files_checked} projection files" if projection else ""
    print(
        f"{report.events} events in {report.streams} streams, "
        f"{report.blobs_checked} blobs{projected} checked, {len(report.erasures)} erasures: "
        f"{'clean' if report.clean else f'{len(report.problems)} problems'}"
    )
    return 0 if report.clean else 1


def _explain(args: argparse.Namespace) -> int:
    log = _log(args)
    try:
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
    finally:
        log.close()


def _command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    doc: str,
    model: type[AuditSettings],
) -> argparse.ArgumentParser:
    parser = cli.command(commands, name, doc)
    parser.add_argument(
        "--backend",
        choices=["kafka", "embedded"],
        default="kafka",
        help="kafka (the default) or embedded: the SQLite log and blobs in --data-dir",
    )
    parser.add_argument("--data-dir", type=Path, default=Path(".mint/demo"))
    settings.add_flags(parser, model)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mint.audit",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _command(
        commands,
        "verify",
        "walk every hash chain, check every blob (and the projection's files)",
        AuditVerifySettings,
    )
    rp = _command(commands, "replay", "the registry's state at a moment", AuditSettings)
    moment = rp.add_mutually_exclusive_group()
    moment.add_argument("--as-of", type=_time, help="ISO time (events up to it)")
    moment.add_argument("--as-of-offsets", type=_offsets, help="partition:offset,... (before)")
    rp.add_argument("--json", action="store_true")
    pv = _command(commands, "provenance", "an adapter's lineage", AuditSettings)
    pv.add_argument("adapter", help="tenant/name or tenant/name@revision")
    pv.add_argument("--json", action="store_true")
    pv.add_argument("--svg", type=Path, help="also write the lineage graph here")
    args = parser.parse_args(argv)
    try:
        return _verify(args) if args.command == "verify" else _explain(args)
    except DomainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
