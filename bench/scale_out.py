"""Scale-out to a million adapters (issue 12): each acceptance figure, measured per number
of adapters in the same run, with the largest size's value against the smallest's.

For each size N: a fresh topic (its name also names the bucket of its blobs and
projection) is filled with N adapters x 3 events (created, revision 1 published, `latest`
moved), as a registry writes them, and no snapshots; then, registry replicas running as
their own processes:

  fill                  events/s of the fill (kafka-python, batched, worker processes)
  first_start           a replica on that log (as after an upgrade): it replays, serves,
                        writes every snapshot; time to serve, RSS; then it stops
  ready_from_snapshots  a replica started again: time until it serves every partition,
                        RSS and peak RSS, whether the snapshots were used   (<= 60 s and
                        <= 2 GiB at 10^6)
  command_latency       MoveChannel on random adapters on the owner, one at a time:
                        p50/p99 (the steady state the rebalance is compared with)
  list_adapters         ListAdapters' first page of 100 of one tenant of --listed
                        adapters (its catalog entries written with the projector's planner
                        and sink), p50/p99; and a walk of all its pages while commands run
                        and new entries appear: each adapter exactly once
  append_one_replica    events/s through the replica vs the raw producer (registry_append)
  second_replica        a second replica starts while commands run on the first: errors
                        and p99 on the partitions the first keeps vs steady (none, <= 2x),
                        the first's RSS before and after it gave half its partitions away
  non_owner             commands sent to the replica that does not own the partition:
                        time to refuse (<= 5 ms); a refused publish leaves the bucket as it
                        was
  append_two_replicas   events/s with clients over both replicas, beside one replica's
  projector_catch_up    the live projector from offset 0 until caught up (--skip-projector)
                                                                  (<= 30 min at 10^6)
  audit_verify          every chain and every referenced blob (--skip-audit)
                                                                  (<= 10 min at 10^6)
  controller_planning   bench/controller_plan's steady planning turns with N addressable,
                        N/10 (20 to 10^4) wanted, 50 nodes (--skip-controller)
                                                                  (<= 100 ms at 10^6)

Then the smallest and the largest size side by side (both worlds are kept until then):

  paired                a replica of each serving at once; --paired-commands MoveChannel
                        and --paired-pages first pages per size, one request to each size
                        per round: p50/p99 of each            (10^6 <= 1.2x 10^3)

A figure that fails records its error and the next one runs. Prints each figure as it
comes and a table of every target at the end; records bench/results/scale_out.json and
.svg (unless --no-record). Uses the MINT_* servers, or starts a temporary Kafka + S3.
At 10^6 on a 2-core machine: see bench/README.md (wall time, memory).

  python -m bench.scale_out --sizes 1000,10000
  python -m bench.scale_out --sizes 1000,1000000 --skip-projector
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from bench.common import record, remove, servers
from bench.scale_figures import (
    Figure,
    Options,
    Run,
    append_one_replica,
    command_latency,
    fill_topic,
    first_start,
    list_adapters,
    ready_from_snapshots,
)
from bench.scale_fill import Layout
from bench.scale_hooks import audit_verify, controller_planning, projector_catch_up
from bench.scale_paired import paired_latency
from bench.scale_report import chart, checks, print_table, size_label
from bench.scale_two import append_two_replicas, non_owner, second_replica
from mint.backends.kafka import KafkaConnection
from mint.backends.kafka_snapshots import snapshot_topic
from mint.backends.s3 import S3Settings, client

NAME = "scale_out"
WITH_REPLICAS: list[tuple[str, Callable[[Run], Figure]]] = [
    ("fill", fill_topic),
    ("first_start", first_start),
    ("ready_from_snapshots", ready_from_snapshots),
    ("command_latency", command_latency),
    ("list_adapters", list_adapters),
    ("append_one_replica", append_one_replica),
    ("second_replica", second_replica),
    ("non_owner", non_owner),
    ("append_two_replicas", append_two_replicas),
]
PAIRED_COMMANDS = 1000  # per size: the p99 is the 10th slowest
PAIRED_PAGES = 200
PARALLEL_FILL_FROM = 20_000  # adapters: below, starting worker processes costs more


# The same first commands ran 2-3x slower on a broker just started than a minute later.
WARM_UP_ADAPTERS = 200


def measure_size(
    env: dict[str, str], adapters: int, options: Options, keep: bool
) -> dict[str, Any]:
    """Every figure for `adapters` adapters, in order, on a topic of their own."""
    with world(env, adapters, options, keep) as run:
        return measure(run)


@contextmanager
def world(env: dict[str, str], adapters: int, options: Options, keep: bool) -> Iterator[Run]:
    """A fresh topic and bucket for `adapters` adapters (filled by the first figure),
    removed on leaving unless `keep`."""
    kafka = KafkaConnection(env["MINT_KAFKA_BOOTSTRAP"])
    s3 = client(
        S3Settings(env["MINT_S3_ENDPOINT"], env["MINT_S3_ACCESS_KEY"], env["MINT_S3_SECRET_KEY"])
    )
    topic = f"scale-{uuid.uuid4().hex[:8]}"
    print(f"  topic and bucket {topic}", flush=True)
    folder = Path(tempfile.mkdtemp(prefix=f"mint-{topic}-"))  # the replicas' logs
    try:
        run = Run(
            env, kafka, s3, topic, Layout(adapters, min(options.listed, adapters)), options, folder
        )
        run.rng.seed(options.seed)
        yield run
    finally:
        if keep:
            print(f"  kept: topic and bucket {topic}, the replicas' logs in {folder}")
        else:
            remove(kafka, s3, [topic, snapshot_topic(topic)], [topic])  # at 10^6: gigabytes
            shutil.rmtree(folder)


def measure(run: Run) -> dict[str, Any]:
    """Every figure of one size's world, and how busy the machine was before and after
    (other work on it moves every figure)."""
    figures: dict[str, Any] = {"topic": run.topic, "load_average": [_load()]}
    _measure_all(run, figures)
    figures["load_average"].append(_load())
    return figures


def _load() -> float:
    return round(os.getloadavg()[0], 1)


def _measure_all(run: Run, figures: dict[str, Any]) -> None:
    """Each figure in order; the replicas stop before the projector, `audit verify` and
    the controller run, which need the cores."""
    try:
        for name, figure in WITH_REPLICAS:
            figures[name] = _measured(name, figure, run)
    finally:
        run.stop()
    later = [
        (run.options.projector, "projector_catch_up", projector_catch_up),
        (run.options.audit, "audit_verify", audit_verify),
        (run.options.controller, "controller_planning", controller_planning),
    ]
    for wanted, name, figure in later:
        if wanted:
            figures[name] = _measured(name, figure, run)


def _measured(name: str, figure: Callable[[Run], Figure], run: Run) -> Figure:
    began = time.perf_counter()
    try:
        found = figure(run)
    except Exception as exc:  # recorded; the next figures still run
        found = {"error": f"{type(exc).__name__}: {exc}", "where": traceback.format_exc(limit=-3)}
    print(f"  {name} ({time.perf_counter() - began:.1f} s): {found}", flush=True)
    return found


def _sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(part.replace("_", "")) for part in text.split(",")})
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected sizes like 1000,1000000, not {text!r}"
        ) from None
    if not sizes or sizes[0] < 10:
        raise argparse.ArgumentTypeError("every size must be at least 10 adapters")
    return sizes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.scale_out",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d = Options()
    p.add_argument(
        "--sizes",
        type=_sizes,
        default=[1000, 1_000_000],
        help="numbers of adapters, comma-separated (default 1000,1000000)",
    )
    p.add_argument(
        "--listed",
        type=int,
        default=d.listed,
        help="adapters of the tenant ListAdapters pages through",
    )
    p.add_argument(
        "--commands", type=int, default=d.commands, help="timed MoveChannel commands on the owner"
    )
    p.add_argument("--list-requests", type=int, default=d.list_requests, help="timed first pages")
    p.add_argument(
        "--paired-commands",
        type=int,
        default=PAIRED_COMMANDS,
        help="commands per size when the smallest and largest sizes are timed side by side",
    )
    p.add_argument(
        "--paired-pages",
        type=int,
        default=PAIRED_PAGES,
        help="first pages per size when the smallest and largest sizes are timed side by side",
    )
    p.add_argument(
        "--clients", type=int, default=d.clients, help="concurrent clients of the append throughput"
    )
    p.add_argument(
        "--append-commands",
        type=int,
        default=d.append_commands,
        help="commands per append-throughput run",
    )
    p.add_argument(
        "--settle-s",
        type=float,
        default=d.settle_s,
        help="commands go on this long after the second replica serves",
    )
    p.add_argument(
        "--start-timeout-s", type=float, default=d.start_timeout_s, help="for a replica to serve"
    )
    p.add_argument(
        "--fill-workers",
        type=int,
        default=0,
        help=f"fill processes (0: 1 below {PARALLEL_FILL_FROM:,} adapters, else one per CPU)",
    )
    p.add_argument(
        "--skip-projector",
        action="store_true",
        help="no projector catch-up (100-600 events/s here: hours at 10^6)",
    )
    p.add_argument("--skip-audit", action="store_true", help="no audit verify")
    p.add_argument("--skip-controller", action="store_true", help="no controller planning turns")
    p.add_argument(
        "--plan-turns", type=int, default=d.plan_turns, help="steady controller planning turns"
    )
    p.add_argument("--seed", type=int, default=d.seed, help="which adapters the commands pick")
    p.add_argument(
        "--keep", action="store_true", help="keep each size's topics, bucket and replica logs"
    )
    p.add_argument("--no-record", action="store_true", help="print only: write no results")
    p.add_argument(
        "--warm-up",
        type=int,
        default=WARM_UP_ADAPTERS,
        help="adapters of an unrecorded first size, so that the first recorded one does not "
        "meet a cold broker (its JIT, its page cache): 0 for none",
    )
    return p.parse_args(argv)


def options_for(args: argparse.Namespace, adapters: int) -> Options:
    workers = args.fill_workers or (1 if adapters < PARALLEL_FILL_FROM else os.cpu_count() or 1)
    return Options(
        listed=args.listed,
        commands=args.commands,
        list_requests=args.list_requests,
        clients=args.clients,
        append_commands=args.append_commands,
        settle_s=args.settle_s,
        start_timeout_s=args.start_timeout_s,
        fill_workers=workers,
        projector=not args.skip_projector,
        audit=not args.skip_audit,
        controller=not args.skip_controller,
        plan_turns=args.plan_turns,
        seed=args.seed,
    )


def main(argv: list[str] | None = None) -> dict[int, dict[str, Any]]:
    args = parse_args(argv)
    runs: dict[int, dict[str, Any]] = {}
    # The smallest and the largest worlds stay until their latencies are taken side by side.
    paired = {args.sizes[0], args.sizes[-1]} if len(args.sizes) > 1 else set()
    with servers() as env, ExitStack() as kept:
        if args.warm_up:
            print(f"warm-up: {args.warm_up:,} adapters, not recorded", flush=True)
            measure_size(env, args.warm_up, options_for(args, args.warm_up), keep=False)
        worlds: dict[int, Run] = {}
        for adapters in args.sizes:
            print(f"{size_label(adapters)} adapters ({3 * adapters:,} events):", flush=True)
            began = time.perf_counter()
            options = options_for(args, adapters)
            if adapters in paired:
                worlds[adapters] = kept.enter_context(world(env, adapters, options, args.keep))
                runs[adapters] = measure(worlds[adapters])
            else:
                runs[adapters] = measure_size(env, adapters, options, args.keep)
            runs[adapters]["wall_s"] = round(time.perf_counter() - began, 1)
            print(f"  wall time {runs[adapters]['wall_s']:,.0f} s", flush=True)
        if worlds:
            for size, figure in _side_by_side(worlds, args).items():
                runs[size]["paired"] = figure
    print_table(runs)
    if not args.no_record:
        path = record(
            NAME,
            {
                "sizes": args.sizes,
                "runs": {str(size): figures for size, figures in runs.items()},
                "checks": checks(runs),
                "options": {k: v for k, v in vars(args).items() if k not in ("keep", "no_record")},
            },
        )
        print(f"recorded in {path} and {chart(runs, NAME)}")
    return runs


def _side_by_side(worlds: dict[int, Run], args: argparse.Namespace) -> dict[int, Figure]:
    """The paired latencies, or the error recorded for each size."""
    labels = " and ".join(size_label(size) for size in sorted(worlds))
    print(f"{labels} side by side:", flush=True)
    began = time.perf_counter()
    try:
        found = paired_latency(worlds, args.paired_commands, args.paired_pages)
    except Exception as exc:  # recorded, as a figure's error is
        error = {"error": f"{type(exc).__name__}: {exc}", "where": traceback.format_exc(limit=-3)}
        found = dict.fromkeys(worlds, error)
    print(f"  paired ({time.perf_counter() - began:.1f} s): {found}", flush=True)
    return found


if __name__ == "__main__":
    main()
