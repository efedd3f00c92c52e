"""Project the adapter log into S3 in the PEFT layout.

  python -m streams.projector run      [--bucket mint] [--prefix P]   live, as a group
  python -m streams.projector rebuild  --bucket B [--prefix P]        from offset 0

Kafka and S3 come from MINT_KAFKA_BOOTSTRAP and MINT_S3_* (see `python -m deploy.local
env`). The blobs are read from --blobs-bucket (the registry's bucket). `rebuild` into a
fresh bucket or prefix yields the same objects as the live projection.
"""

from __future__ import annotations

import os

from mint import cli
from mint.backends.kafka_log import DEFAULT_TOPIC, KafkaEventLog
from mint.backends.s3 import client
from mint.backends.settings import servers_from_env

from .runner import Projector, rebuild
from .sink import S3Sink


def main() -> None:
    parser = cli.parser("python -m streams.projector", __doc__)
    parser.add_argument("command", choices=["run", "rebuild"])
    parser.add_argument("--topic", default=DEFAULT_TOPIC)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--bucket", default="mint", help="where the projection goes")
    parser.add_argument("--prefix", default="", help="key prefix inside the bucket")
    parser.add_argument("--blobs-bucket", default="mint", help="the registry's blob bucket")
    parser.add_argument("--group", default="mint-projector", help="consumer group (run)")
    parser.add_argument(
        "--instance-id",
        default=os.environ.get("HOSTNAME") or None,
        help="static group membership: a restart under the same id resumes "
        "at once (default: $HOSTNAME, the pod name on Kubernetes)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=9464,
        help="serve /metrics (lag, events applied) and /healthz; 0: off",
    )
    args = parser.parse_args()
    servers = servers_from_env()
    s3 = client(servers.s3)
    sink = S3Sink(s3, args.bucket, args.blobs_bucket, args.prefix)
    if args.command == "rebuild":
        event_log = KafkaEventLog(servers.kafka_bootstrap, args.topic, args.partitions, owned=())
        count = rebuild(event_log, sink)
        print(
            f"rebuilt s3://{args.bucket}/{args.prefix} from {count} events "
            f"({sink.written} objects written)"
        )
        return
    projector = Projector(servers.kafka_bootstrap, args.topic, sink, args.group, args.instance_id)
    if args.metrics_port:
        projector.metrics.serve(args.metrics_port)
    stop = cli.stop_on_signals()
    projector.run(stop, report_every_s=10)
    projector.close()


if __name__ == "__main__":
    main()
