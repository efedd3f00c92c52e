"""Run the residency controller (run two or more: one is active, the others stand by).

  python -m services.controller [--topics-prefix mint.residency] [--metrics-port 9467]

Reads demand (from the routers) and node reports, decides placement (rendezvous hashing
plus capacity, replicas for hot adapters, re-placement when a node goes silent) and
publishes desired residency. Kafka comes from MINT_KAFKA_BOOTSTRAP. With --metrics-port
it serves /metrics (active, live nodes, wanted and hot groups, intents, re-plans) and
/healthz (503 if the control loop is stuck).
"""

from __future__ import annotations

from mint import cli
from mint.backends.kafka_residency import ResidencyTopics
from mint.backends.settings import servers_from_env
from mint.probes import serve_probes

from .controller import Controller, ControllerConfig


def main() -> None:
    parser = cli.parser("python -m services.controller", __doc__)
    parser.add_argument("--topics-prefix", default="mint.residency")
    parser.add_argument("--group", default="mint-controller", help="controllers share it")
    parser.add_argument("--silence-s", type=float, default=4.0, help="when a node is dead")
    parser.add_argument("--hot-rps", type=float, default=5.0, help="requests/s per replica")
    parser.add_argument("--max-replicas", type=int, default=3)
    parser.add_argument("--metrics-port", type=int, default=0, help="/metrics, /healthz; 0: off")
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
    if args.metrics_port:
        serve_probes(args.metrics_port, controller.metrics.render, controller.metrics.problem)
    stop = cli.stop_on_signals()
    print("controller running", flush=True)
    controller.run(stop)


if __name__ == "__main__":
    main()
