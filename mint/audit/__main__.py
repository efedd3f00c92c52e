"""Audit the adapter log: verify it, replay it to a moment, explain an adapter.

  python -m mint.audit verify                          chains + blobs; exit 1 on problems
                                                       (progress on stderr as it goes)
  python -m mint.audit verify --projection-bucket P    also the projection: revision files,
                                                       pointers, manifests, evaluations,
                                                       catalog entries (each against what
                                                       the log writes), and objects no
                                                       event writes
  python -m mint.audit verify --public-key signing.pub also the signed checkpoints: nothing
                                                       rewritten, truncated or deleted
  python -m mint.audit replay --as-of 2026-11-29T15:00:00Z [--json]
  python -m mint.audit replay --as-of-offsets 0:120,1:98 [--json]
  python -m mint.audit provenance acme/tone[@3] [--json | --svg lineage.svg]
  python -m mint.audit reproduce RESPONSE_ID --router HOST:PORT --token T [--json]
                                                       replay a served response on its
                                                       exact revisions; exit 1 if it differs
                                                       or the log does not hold the
                                                       revision events it names
  python -m mint.audit gc [--dry-run] [--grace-s 86400] [--lease-s 300]
                                                       delete blobs no event references

Back ends: --backend kafka (the default: Kafka, and S3 for `verify`, from flags or the
MINT_* variables `python -m deploy.local env` prints; `verify --help` lists them) or
--backend embedded --data-dir DIR (the demo's .mint/demo).

A record that is no event, or an event that cannot be placed, is a PROBLEM line naming
its position: verify checks the rest, replay and provenance (on stderr) leave it out;
exit 1. A topic, bucket or partition that does not exist is one error line, exit 2: the
audit creates nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
from collections.abc import Sized
from datetime import datetime
from pathlib import Path
from typing import Any

from mint import cli, logs, settings, startup
from mint.blobs.port import BlobStore
from mint.domain.errors import DomainError, InvalidArgument, NotFound
from mint.domain.names import AdapterRef
from mint.eventlog.chain import ChainProblem
from mint.eventlog.checkpoints import CheckpointStore, public_keys
from mint.eventlog.port import EventLog

from . import checkpoints, gc, progress, provenance, replay, reproduce, sources, verify
from .settings import (
    AuditGcSettings,
    AuditReproduceSettings,
    AuditSettings,
    AuditVerifySettings,
    GcOptions,
)
from .sources import LogSource


def _embedded_log(args: argparse.Namespace) -> EventLog:
    from mint.backends.sqlite_log import SqliteEventLog

    return SqliteEventLog(args.data_dir / "events.db")


def _source(args: argparse.Namespace, model: type[AuditSettings] = AuditSettings) -> LogSource:
    """The log, read-only; on Kafka its topic must exist."""
    if args.backend == "embedded":
        return sources.embedded_source(args.data_dir / "events.db")
    config = settings.load(model, args)
    cli.configure(config)
    startup.require_kafka(config, config.startup_timeout_s)
    return sources.kafka_source(config.kafka(), config.events_topic, config.events_partitions)


def _checked(args: argparse.Namespace) -> tuple[BlobStore, verify.Objects | None]:
    """What `verify` checks besides the log: the blobs and (given its bucket) the
    projection, whose buckets must exist."""
    if args.backend == "embedded":
        from mint.backends.local_blobs import LocalBlobStore, local_kek

        return LocalBlobStore(args.data_dir, local_kek(args.data_dir / "kek")), None
    from mint.backends.s3 import client
    from mint.backends.s3_blobs import S3BlobStore
    from mint.backends.s3_objects import S3Objects

    config = settings.load(AuditVerifySettings, args)
    startup.require_s3(config, config.blobs_bucket, config.startup_timeout_s)
    s3 = client(config.s3())
    sources.require_bucket(s3, config.blobs_bucket, "blobs_bucket")
    projection = None
    if config.projection_bucket:
        sources.require_bucket(s3, config.projection_bucket, "projection_bucket")
        projection = S3Objects(s3, config.projection_bucket, config.projection_prefix)
    return S3BlobStore(s3, config.blobs_bucket, config.kek()), projection


def _gc(args: argparse.Namespace) -> int:
    if args.backend == "embedded":
        from mint.backends.local_blobs import LocalBlobStore, local_kek

        options = settings.load(GcOptions, args)
        log: EventLog = _embedded_log(args)
        blobs: BlobStore = LocalBlobStore(args.data_dir, local_kek(args.data_dir / "kek"))
    else:
        from mint.backends.kafka_log import KafkaEventLog
        from mint.backends.s3 import client
        from mint.backends.s3_blobs import S3BlobStore

        config = settings.load(AuditGcSettings, args)
        cli.configure(config)
        startup.require_kafka(config, config.startup_timeout_s)
        startup.require_s3(config, config.blobs_bucket, config.startup_timeout_s)
        # Both checked first: opening them creates what is missing, and an empty log
        # references no blob, an empty bucket holds none: "done", having collected nothing.
        sources.require_topic(config.kafka(), config.events_topic, config.events_partitions)
        s3 = client(config.s3())
        sources.require_bucket(s3, config.blobs_bucket, "blobs_bucket")
        log = KafkaEventLog(config.kafka(), config.events_topic, config.events_partitions, owned=())
        blobs = S3BlobStore(s3, config.blobs_bucket, config.kek())
        options = config
    try:
        run = gc.run_gc(
            log, blobs, options.grace_s, options.lease_s, args.dry_run, options.metrics_file
        )
    finally:
        log.close()
    for blob in run.orphans if args.dry_run else run.deleted:
        print(f"{'unreferenced' if args.dry_run else 'deleted'} {blob.adapter_id} {blob.sha256}")
    print(run.summary())
    return 0


def _offsets(text: str) -> dict[int, int]:
    try:
        return {int(p): int(o) for p, o in (pair.split(":") for pair in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(
            "expected partition:offset[,partition:offset...]"
        ) from None


def _key_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no file {text}: give the signing key's public PEM")
    return path


def _time(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            "expected an ISO time, e.g. 2026-11-29T15:00:00Z"
        ) from None


def _signed_history(args: argparse.Namespace) -> checkpoints.SignedHistory | None:
    """Given --public-key: the stored checkpoints, their signatures checked."""
    if not args.public_key:
        return None
    history = checkpoints.SignedHistory(public_keys(path.read_bytes() for path in args.public_key))
    store: CheckpointStore
    if args.backend == "embedded":
        from mint.backends.sqlite_checkpoints import SqliteCheckpointStore

        store = SqliteCheckpointStore(args.data_dir / "events.db")
    else:
        from mint.backends.kafka_checkpoints import KafkaCheckpointStore

        config = settings.load(AuditSettings, args)
        store = KafkaCheckpointStore(
            config.kafka(), config.events_topic, config.events_partitions, create=False
        )
    try:
        history.add(store.read_all())
    finally:
        store.close()
    return history


def _verify(args: argparse.Namespace) -> int:
    source = _source(args, AuditVerifySettings)
    # The checkpoints before the log: every event they name was committed before the log
    # is read, so an event appended meanwhile never reads as cut off.
    history = _signed_history(args)
    blobs, projection = _checked(args)
    with progress.shown() as show:  # on stderr: stdout is the report
        records = source.read() if history is None else history.watch(source.read())
        report = verify.verify(records, blobs, projection, show)
    problems = [*report.problems, *(history.finish() if history is not None else [])]
    for problem in problems:
        print(f"PROBLEM {problem}")
    for erasure in report.erasures:
        print(f"ERASED {erasure}")
    if history is not None:
        print(history.summary())
    projected = (
        f", {report.projection_files_checked} projection files, "
        f"{report.projection_objects_checked} other projection objects"
        if projection
        else ""
    )
    print(
        f"{report.events} events in {report.streams} streams, "
        f"{report.blobs_checked} blobs{projected} checked, {len(report.erasures)} erasures: "
        f"{_verdict(problems, report.events)}"
    )
    return 0 if not problems else 1


def _verdict(problems: Sized, events: int) -> str:
    if problems:
        return f"{len(problems)} problems"
    # Not "clean": an empty log vouches for nothing (a topic nothing was written to yet?).
    return "clean" if events else "no events, nothing to check"


class _Skipped:
    """Records replay or provenance left out, each listed on stderr as it is met (stdout
    is the state or the lineage)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, problem: ChainProblem) -> None:
        self.count += 1
        print(f"PROBLEM {problem}", file=sys.stderr)

    def status(self) -> int:
        if not self.count:
            return 0
        print(
            f"{self.count} record{'s' if self.count > 1 else ''} left out: the log was "
            "altered (`verify` checks it whole)",
            file=sys.stderr,
        )
        return 1


def _explain(args: argparse.Namespace) -> int:
    source, skipped = _source(args), _Skipped()
    if args.command == "replay":
        if args.as_of_offsets is not None:
            sources.check_offsets(args.as_of_offsets, source.partitions)
        state = replay.replay(source.read(), args.as_of_offsets, args.as_of, skipped)
        print(json.dumps(replay.to_json(state), indent=2) if args.json else replay.to_table(state))
        return skipped.status()
    name, _, rev = args.adapter.partition("@")
    ref, revision = AdapterRef.parse(name), int(rev) if rev else None
    doc = provenance.lineage(source.read(), ref, revision, skipped)
    print(json.dumps(doc, indent=2, default=str) if args.json else provenance.to_text(doc))
    if args.svg:
        args.svg.write_text(provenance.to_svg(doc))
        print(f"lineage graph written to {args.svg}", file=sys.stderr)
    return skipped.status()


def _reproduce(args: argparse.Namespace) -> int:
    import grpc

    from mint.backends.kafka_responses import find_response
    from mint.rpc.tls import TlsFiles, dialer
    from mint.serving.provenance import response_time_ms
    from mint.v1 import inference_pb2_grpc, responses_pb2

    config = settings.load(AuditReproduceSettings, args)
    cli.configure(config)
    startup.require_kafka(config, config.startup_timeout_s)
    made_ms = response_time_ms(args.response_id)
    if not config.responses_topic:
        raise InvalidArgument("no responses topic is set: pass --responses-topic")
    found = find_response(
        config.kafka(), config.responses_topic, args.response_id, made_ms, config.wait_s
    )
    if found is None:
        raise NotFound(
            f"no record of {args.response_id} in {config.responses_topic}: it was served by "
            "a node that records nothing, has passed the topic's retention, or was dropped"
        )
    record = responses_pb2.ResponseRecord.FromString(found)
    tls = TlsFiles(ca_file=config.router_ca_file) if config.router_ca_file else None
    metadata = (("authorization", f"Bearer {config.token.get_secret_value()}"),)
    with dialer(tls)(config.router) as channel:
        stub = _Authenticated(inference_pb2_grpc.InferenceStub(channel), metadata)
        try:
            outcome = reproduce.reproduce(record, stub)
        except grpc.RpcError as exc:
            print(f"error: the replay failed: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 2
    read_at = functools.partial(_event_at, config.kafka(), config.events_topic)
    problems = reproduce.log_problems(record.provenance.adapters, read_at)
    outcome = dataclasses.replace(outcome, log_problems=problems)
    print(json.dumps(outcome.to_json(), indent=2) if args.json else outcome.to_text())
    return 0 if outcome.same and not problems else 1


def _event_at(kafka: Any, topic: str, partition: int, offset: int) -> Any:
    """The event at `offset` of `partition`, or None (a marker or nothing is there)."""
    from mint.backends.kafka_reader import read_partitions

    for first in read_partitions(kafka, topic, {partition: offset}, stall_s=10.0):
        return first if first.position.offset == offset else None
    return None


class _Authenticated:
    """A stub whose calls carry the caller's token."""

    def __init__(self, stub: Any, metadata: tuple[tuple[str, str], ...]) -> None:
        self._stub, self._metadata = stub, metadata

    def __getattr__(self, method: str) -> Any:
        return functools.partial(getattr(self._stub, method), metadata=self._metadata)


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
    vf = _command(
        commands,
        "verify",
        "walk every hash chain, check every blob (and the projection)",
        AuditVerifySettings,
    )
    vf.add_argument(
        "--public-key",
        type=_key_file,
        action="append",
        metavar="KEYFILE",
        help="also check the signed checkpoints against this Ed25519 public key (PEM; "
        "repeat for replicas that sign with different keys)",
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
    rr = _command(
        commands, "reproduce", "replay a served response on its revisions", AuditReproduceSettings
    )
    rr.add_argument("response_id", help="as the reply's provenance names it")
    rr.add_argument("--json", action="store_true")
    collect = _command(commands, "gc", "delete blobs that no event references", AuditGcSettings)
    collect.add_argument("--dry-run", action="store_true", help="list them, delete nothing")
    args = parser.parse_args(argv)
    logs.configure()  # until the settings say otherwise
    try:
        if args.command == "reproduce":
            return _reproduce(args)
        if args.command == "gc":
            return _gc(args)
        return _verify(args) if args.command == "verify" else _explain(args)
    except DomainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
