"""Project the adapter log into S3 in the PEFT layout.

  python -m streams.projector run      [--projection-bucket mint] [--projection-prefix P]
  python -m streams.projector rebuild  --projection-bucket B [--projection-prefix P]

Both write up to --s3-concurrency objects at a time (16; 1 writes one at a time).

`run` projects live, as a consumer group; `rebuild` projects from offset 0 and stops,
and into a fresh bucket or prefix it yields the same objects as the live projection.
The blobs are read from the registry's bucket (--blobs-bucket). `run --help` lists every
setting (Kafka and S3: flags or MINT_* variables, as `python -m deploy.local env` prints).
"""

from __future__ import annotations

from mint import cli, settings, startup
from mint.backends.kafka_log import KafkaEventLog
from mint.backends.s3 import client

from .runner import Projector, rebuild
from .settings import ProjectorRunSettings, ProjectorSettings
from .sink import S3Sink


def _started(config: ProjectorSettings) -> None:
    """Logging as the settings say, and Kafka and S3 there."""
    cli.configure(config)
    startup.require_kafka(config, config.startup_timeout_s)
    startup.require_s3(config, config.projection_bucket, config.startup_timeout_s)


def _sink(config: ProjectorSettings) -> S3Sink:
    return S3Sink(
        client(config.s3(), connections=config.s3_concurrency),
        config.projection_bucket,
        config.blobs_bucket,
        config.projection_prefix,
        config.s3_concurrency,
        kek=config.kek(),
    )


def run(config: ProjectorRunSettings) -> None:
    _started(config)
    projector = Projector(
        config.kafka(), config.events_topic, _sink(config), config.group, config.instance_id
    )
    stop = cli.stop_on_signals()  # readiness fails from the signal on
    if config.metrics_port:
        projector.metrics.serve(config.metrics_port, config.host, draining=stop)
    projector.run(stop, report_every_s=10)
    projector.close()


def rebuild_all(config: ProjectorSettings) -> None:
    _started(config)
    sink = _sink(config)
    event_log = KafkaEventLog(
        config.kafka(), config.events_topic, config.events_partitions, owned=()
    )
    count = rebuild(event_log, sink)
    print(
        f"rebuilt s3://{config.projection_bucket}/{config.projection_prefix} from {count} "
        f"events ({sink.written} objects written)"
    )


@cli.entry_point
def main() -> None:
    parser = cli.parser("python -m streams.projector", __doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    settings.add_flags(cli.command(commands, "run", "project live"), ProjectorRunSettings)
    settings.add_flags(cli.command(commands, "rebuild", "from offset 0"), ProjectorSettings)
    args = parser.parse_args()
    if args.command == "run":
        run(settings.load(ProjectorRunSettings, args))
    else:
        rebuild_all(settings.load(ProjectorSettings, args))


if __name__ == "__main__":
    main()
