"""The update loop as a stream processor: apply every adapter update request.

  python -m streams.trainer --registry HOST:50051 --registry-token TOKEN

A member of a Kafka consumer group on the events topic (more members share the
partitions): for each UpdateRequested event it trains revision n+1 from the adapter's
latest revision on the request's examples (read from the blobs bucket), publishes it
through the registry with its provenance, scores the examples on the serving path,
records the evaluation and promotes the revision if the channel's gate lets it, or
holds it. `--help` lists every setting (flags or MINT_* variables).
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from mint import cli, settings, startup
from mint.backends.s3 import client as s3_client
from mint.backends.s3_blobs import S3BlobStore
from mint.client import Client
from mint.models.base import fingerprint, served_base
from mint.models.base_files import describe_base_dir
from mint.rpc.tls import TlsFiles
from mint.training.loop import build_loop
from mint.training.tuning import Hyperparameters

from .registry_port import ClientRegistry
from .runner import Trainer
from .settings import TrainerSettings


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _started(config: TrainerSettings) -> None:
    """Logging as the settings say; the base folder, Kafka and S3 there."""
    cli.configure(config)
    startup.require_base_dir(config.base_dir)  # local first: no waiting on servers for it
    startup.require_kafka(config, config.startup_timeout_s)
    startup.require_s3(config, config.blobs_bucket, config.startup_timeout_s)


@cli.entry_point
def main() -> None:
    parser = cli.parser("python -m streams.trainer", __doc__)
    settings.add_flags(parser, TrainerSettings)
    config = settings.load(TrainerSettings, parser.parse_args())
    _started(config)
    device = _device(config.device)

    def load_base() -> PreTrainedModel:
        base = served_base(config.base_dir, config.base_seed)  # the nodes' and the evaluator's
        torch.nn.Module.to(base, device)  # in its stored dtype: the fingerprint adapters name
        return base

    tls = TlsFiles(ca_file=config.registry_ca_file) if config.registry_ca_file else None
    registry = Client(config.registry, token=config.registry_token.get_secret_value(), tls=tls)
    hp = Hyperparameters(
        steps=config.steps,
        learning_rate=config.learning_rate,
        rank=config.rank,
        targets=tuple(config.targets.split(",")),
    )
    blobs = S3BlobStore(s3_client(config.s3()), config.blobs_bucket, config.kek())
    base_fingerprint = (  # a folder's from its files, without loading it a third time
        describe_base_dir(config.base_dir).fingerprint
        if config.base_dir
        else fingerprint(load_base())
    )
    loop = build_loop(ClientRegistry(registry), blobs, load_base, base_fingerprint, hp)
    trainer = Trainer(config.kafka(), config.events_topic, loop, config.group, config.instance_id)
    stop = cli.stop_on_signals()
    if config.metrics_port:
        trainer.metrics.serve(config.metrics_port, config.host, draining=stop)
    print(f"trainer {config.group}/{config.instance_id} on {device}", flush=True)
    trainer.run(stop)
    trainer.close()
    registry.close()


if __name__ == "__main__":
    main()
