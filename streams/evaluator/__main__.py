"""Run the platform's evaluator.

  python -m streams.evaluator --evaluator-token T [--registry host:50051] [--base-dir D]

It follows the events topic as a consumer group and, for each new revision of an adapter
whose gates require a platform evaluation, scores the revision on the suite's stored
examples (mean log-prob per continuation token, with the serving engine on the base it
holds) and records the verdict against the gate's threshold, as the platform's principal,
once per revision and gate. `--help` lists every setting (Kafka and S3: flags or MINT_*
variables, as `python -m deploy.local env` prints them).
"""

from __future__ import annotations

from mint import cli, settings, startup
from mint.backends.s3 import client
from mint.backends.s3_blobs import S3BlobStore
from mint.client import RegistryClient
from mint.rpc.tls import TlsFiles

from .scorer import SuiteScorer
from .settings import EvaluatorSettings
from .worker import Evaluator


def _started(config: EvaluatorSettings) -> None:
    """Logging as the settings say; the base folder, Kafka and S3 there."""
    cli.configure(config)
    startup.require_base_dir(config.base_dir)  # local first: no waiting on servers for it
    startup.require_kafka(config, config.startup_timeout_s)
    startup.require_s3(config, config.blobs_bucket, config.startup_timeout_s)


@cli.entry_point
def main() -> None:
    parser = cli.parser("python -m streams.evaluator", __doc__)
    settings.add_flags(parser, EvaluatorSettings)
    config = settings.load(EvaluatorSettings, parser.parse_args())
    _started(config)
    tls = TlsFiles(ca_file=config.registry_ca_file) if config.registry_ca_file else None
    evaluator = Evaluator(
        config.kafka(),
        config.events_topic,
        RegistryClient(config.registry, config.evaluator_token.get_secret_value(), tls=tls),
        S3BlobStore(client(config.s3()), config.blobs_bucket, config.kek()),
        SuiteScorer(config.base_dir, config.base_seed, config.targets.split(","), config.max_rank),
        config.group,
        config.instance_id,
    )
    stop = cli.stop_on_signals()
    if config.metrics_port:
        evaluator.metrics.serve(config.metrics_port, config.host, draining=stop)
    print(f"evaluating for {config.registry} (base {evaluator.scorer.base_fingerprint[:12]}…)")
    evaluator.run(stop)
    evaluator.close()


if __name__ == "__main__":
    main()
