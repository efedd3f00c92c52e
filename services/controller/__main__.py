"""Run the residency controller (run two or more: one is active, the others stand by).

  python -m services.controller [--topics-prefix mint.residency]

Reads demand (from the routers) and node reports, decides placement (rendezvous hashing
plus capacity, replicas for hot adapters, re-placement when a node goes silent) and
publishes desired residency. Kafka comes from MINT_KAFKA_BOOTSTRAP.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from mint.backends.kafka_residency import ResidencyTopics
from mint.backends.settings import servers_from_env

from .controller import Controller, ControllerConfig


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    parser = argparse.ArgumentParser(
        prog="python -m services.controller",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--topics-prefix", default="mint.residency")
    parser.add_argument("--group", default="mint-controller", help="controllers share it")
    parser.add_argument("--silence-s", type=float, default=4.0, help="when a node is dead")
    parser.add_argument("--hot-rps", type=float, default=5.0, help="requests/s per replica")
    parser.add_argument("--max-replicas", type=int, default=3)
    args = parser.parse_args()
    topics = ResidencyTopics(args.topics_prefix)
    bootstrap = servers_from_env().kafka_bootstrap
    topics.create(bootstrap)
    controller = Controller(
        ControllerConfig(
            bootstrap,
            topics,
            args.group,
            silence_s=args.silence_s,
            hot_rps=args.hot_rps,
            max_replicas=args.max_replicas,
        )
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print("controller running", flush=True)
    controller.run(stop)


if __name__ == "__main__":
    main()
