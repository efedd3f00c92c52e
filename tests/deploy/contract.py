"""The settings contract: which MINT_* variables each service reads, and which of them
the manifests must set. Field names as the services' settings models name them (env =
MINT_ + upper case)."""

from __future__ import annotations

from pydantic_settings import BaseSettings

from mint.audit.settings import AuditGcSettings
from services.controller.settings import ControllerSettings
from services.inference.settings import NodeSettings
from services.registry.settings import RegistrySettings
from services.router.settings import RouterSettings
from streams.evaluator.settings import EvaluatorSettings
from streams.projector.settings import ProjectorRunSettings
from streams.trainer.settings import TrainerSettings


def env(*fields: str) -> frozenset[str]:
    return frozenset(f"MINT_{f.upper()}" for f in fields)


def reads(model: type[BaseSettings]) -> frozenset[str]:
    """Every MINT_* variable a service's settings model reads."""
    return env(*model.model_fields)


# What each service reads, from its settings model itself: a variable no model has is a
# manifest's mistake.
ALLOWED = {
    "registry": reads(RegistrySettings),
    "projector": reads(ProjectorRunSettings),
    "controller": reads(ControllerSettings),
    "router": reads(RouterSettings),
    "node": reads(NodeSettings),
    "trainer": reads(TrainerSettings),
    "evaluator": reads(EvaluatorSettings),
    "gc": reads(AuditGcSettings),
}

# What a pod must be given: the servers, and what has no usable default in a pod (the
# default host 127.0.0.1 cannot be probed; a node's name and address are the pod's).
_S3_NEEDED = env("s3_endpoint", "s3_access_key", "s3_secret_key")
REQUIRED = {
    "registry": env("kafka_bootstrap", "blobs_bucket", "tokens_file", "host", "port")
    | env("projection_bucket", "health_port", "tls_cert_file", "tls_key_file")
    | env("checkpoint_signing_key")
    | _S3_NEEDED,
    "projector": env("kafka_bootstrap", "blobs_bucket", "projection_bucket", "host")
    | env("metrics_port")
    | _S3_NEEDED,
    "controller": env("kafka_bootstrap", "host", "metrics_port"),
    "router": env("kafka_bootstrap", "projection_bucket", "tokens_file", "host", "port")
    | env("health_port", "metrics_port", "name", "tls_cert_file", "tls_key_file", "tls_ca_file")
    | _S3_NEEDED,
    "node": env("kafka_bootstrap", "projection_bucket", "tokens_file", "host", "port")
    | env("health_port", "metrics_port", "name", "advertise_host")
    | env("tls_cert_file", "tls_key_file", "tls_ca_file", "tls_require_client_cert")
    | _S3_NEEDED,
    # The workers call the registry over TLS with their own tokens.
    "trainer": env("kafka_bootstrap", "blobs_bucket", "host", "metrics_port")
    | env("registry", "registry_token", "registry_ca_file")
    | _S3_NEEDED,
    "evaluator": env("kafka_bootstrap", "blobs_bucket", "host", "metrics_port")
    | env("registry", "evaluator_token", "registry_ca_file")
    | _S3_NEEDED,
    "gc": env("kafka_bootstrap", "blobs_bucket", "events_partitions") | _S3_NEEDED,
}

# Values several services must agree on: they come from the one ConfigMap, key = name.
SHARED = env(
    "kafka_bootstrap",
    "kafka_security_protocol",
    "kafka_ssl_cafile",
    "kafka_ssl_certfile",
    "kafka_ssl_keyfile",
    "s3_endpoint",
    "s3_secure",
    "blobs_bucket",
    "projection_bucket",
    "projection_prefix",
    "events_topic",
    "events_partitions",
    "residency_topics_prefix",
)
CONFIG_MAP = "mint-config"
IMAGES = {
    "registry": "ghcr.io/mint-project/mint:0.1.0",
    "projector": "ghcr.io/mint-project/mint:0.1.0",
    "controller": "ghcr.io/mint-project/mint:0.1.0",
    "router": "ghcr.io/mint-project/mint:0.1.0",
    "node": "ghcr.io/mint-project/mint-serving:0.1.0",
    "trainer": "ghcr.io/mint-project/mint-serving:0.1.0",
    "evaluator": "ghcr.io/mint-project/mint-serving:0.1.0",
    "gc": "ghcr.io/mint-project/mint:0.1.0",
}
# Secrets an overlay uses but leaves to the operator (deploy/k8s/README.md says how to
# create each), with the keys the pods read.
EXTERNAL_SECRETS: dict[str, dict[str, set[str]]] = {
    "dev": {},
    "production": {
        "mint-s3": {"access-key", "secret-key"},
        "mint-tokens": {"tokens.json"},
        "mint-checkpoint-key": {"signing.pem"},
        "mint-kek": {"kek"},
        "mint-trainer-token": {"token"},
        "mint-evaluator-token": {"token"},
    },
}
