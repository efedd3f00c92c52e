"""Run the residency controller (run two or more: one is active, the others stand by).

  python -m services.controller [--kafka-bootstrap HOST:PORT] [--metrics-port 9467]

Reads demand (from the routers) and node reports, decides placement (rendezvous hashing
plus capacity, replicas for hot adapters, re-placement when a node goes silent) and
publishes desired residency; an adapter not demanded for --want-idle-s is no longer kept
placed. It needs Kafka only. With a metrics port it serves /metrics (active, live nodes,
wanted, hot and expired groups, intents, re-plans) and /healthz (503 if the control loop
is stuck).
"""

from __future__ import annotations

from mint import cli, settings, startup
from mint.probes import serve_probes

from .controller import Controller, ControllerConfig
from .settings import ControllerSettings


@cli.entry_point
def main() -> None:
    parser = cli.parser("python -m services.controller", __doc__)
    settings.add_flags(parser, ControllerSettings)
    config = settings.load(ControllerSettings, parser.parse_args())
    cli.configure(config)
    startup.require_kafka(config, config.startup_timeout_s)
    kafka, topics = config.kafka(), config.residency_topics()
    topics.create(kafka)
    controller = Controller(
        ControllerConfig(
            kafka,
            topics,
            config.group,
            silence_s=config.silence_s,
            hot_rps=config.hot_rps,
            max_replicas=config.max_replicas,
            want_idle_s=config.want_idle_s,
        )
    )
    stop = cli.stop_on_signals()  # readiness fails from the signal on
    if config.metrics_port:
        metrics = controller.metrics
        serve_probes(config.metrics_port, metrics.render, metrics.problem, config.host, stop)
    print("controller running", flush=True)
    controller.run(stop)


if __name__ == "__main__":
    main()
