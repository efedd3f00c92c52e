"""The evaluator's settings: the events topic in, the registry to record verdicts at, the
blobs bucket for the suites' examples, and the base it scores on."""

from __future__ import annotations

import os

from pydantic import Field, FilePath, PositiveInt, SecretStr, field_validator

from mint.settings import (
    BlobsOptions,
    EventsOptions,
    KafkaOptions,
    KekOptions,
    ListenOptions,
    ProcessOptions,
    S3Options,
    checked_addresses,
    metrics_port,
)


class EvaluatorSettings(
    KafkaOptions,
    S3Options,
    BlobsOptions,
    KekOptions,
    EventsOptions,
    ListenOptions,
    ProcessOptions,
):
    registry: str = Field(
        "127.0.0.1:50051", description="registry replicas, host:port[,host:port...]"
    )
    _registry_is_addresses = field_validator("registry")(checked_addresses)
    evaluator_token: SecretStr = Field(
        description="token of the platform's principal (a tokens-file entry with "
        '"platform": true and tenants ["*"]; a secret)'
    )
    base_dir: str | None = Field(
        None, description="a local transformers causal-LM directory (none: a tiny built-in base)"
    )
    base_seed: int = Field(0, description="seed of the built-in base")
    targets: str = Field("q_proj,v_proj", description="LoRA target modules, comma-separated")
    max_rank: PositiveInt = Field(64, description="largest adapter rank it scores")
    group: str = Field("mint-evaluator", description="consumer group the evaluators share")
    instance_id: str | None = Field(
        default_factory=lambda: os.environ.get("HOSTNAME") or None,
        description="static group membership: a restart under the same id resumes at once "
        "(default: $HOSTNAME, the pod name on Kubernetes)",
    )
    metrics_port: int = metrics_port(9469)
    registry_ca_file: FilePath | None = Field(
        None, description="CA that signed the registry's TLS certificate (none: plaintext)"
    )
