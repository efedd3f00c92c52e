"""Settings of MinT's processes: one pydantic-settings model per service, made of the
option groups below, so that each requires only what it uses.

A setting comes from, first found: its flag (`--kafka-bootstrap`), its variable
(`MINT_KAFKA_BOOTSTRAP`), a file named like the variable in the secrets directory
(`--secrets-dir`, default `$MINT_SECRETS_DIR`: how Kubernetes mounts a Secret), its
default. A missing or bad setting stops the process with a message naming its flag and
variable.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self, TypeVar

from pydantic import (
    Field,
    FilePath,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, CliSettingsSource, SettingsConfigDict

from mint.backends.kafka import KafkaConnection
from mint.backends.kafka_log import DEFAULT_TOPIC
from mint.backends.kafka_residency import ResidencyTopics
from mint.backends.kafka_responses import ResponsesTopic
from mint.backends.s3 import S3Settings
from mint.blobs.sealing import Kek
from mint.logs import LogConfig, LogLevel
from mint.rpc.tls import TlsFiles

SECRETS_DIR = "MINT_SECRETS_DIR"
HOW_TO_SET = f"""\
Every option can also be given as the variable MINT_<OPTION> (upper case, '_' for '-':
--kafka-bootstrap is MINT_KAFKA_BOOTSTRAP) or as a file of that name in --secrets-dir
(default ${SECRETS_DIR}; a Kubernetes Secret mounted as a volume). A flag wins over a
variable, a variable over a file."""


def option(name: str) -> str:
    """How to give the setting `name`: its flag and its variable."""
    return f"--{name.replace('_', '-')} or MINT_{name.upper()}"


class MintSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MINT_",
        cli_kebab_case=True,
        cli_implicit_flags=True,  # --s3-secure / --no-s3-secure
        cli_hide_none_type=True,
    )


def grpc_port(default: int) -> Any:
    return Field(default, ge=0, le=65535, description="gRPC port; 0 picks a free one")


def metrics_port(default: int) -> Any:
    return Field(default, ge=0, le=65535, description="port of /metrics and /healthz; 0: off")


class ProcessOptions(MintSettings):
    """What every MinT process takes: how it logs, and how long its start-up checks wait
    for the servers it needs."""

    log_level: LogLevel = Field("INFO", description="level of MinT's own log lines")
    library_log_level: LogLevel = Field(
        "WARNING", description="level of the libraries' log lines (kafka-python, urllib3, …)"
    )
    logger_levels: str = Field(
        "",
        description="levels of single loggers, overriding both, e.g. kafka=INFO,urllib3=DEBUG",
    )
    log_format: Literal["text", "json"] = Field(
        "text",
        description="text lines, or json: one object per line (time, level, logger, "
        "message, request_id while serving a call)",
    )
    otel: bool = Field(
        False,
        description="trace each RPC with OpenTelemetry (the otel extra; spans go where "
        "opentelemetry-instrument and the OTEL_* variables send them)",
    )
    startup_timeout_s: PositiveFloat = Field(
        10.0,
        description="how long the start-up checks wait for Kafka and S3; past it the process "
        "exits with one line naming the server it cannot reach",
    )

    @model_validator(mode="after")
    def _logger_levels_parse(self) -> Self:
        try:
            LogConfig.parse_logger_levels(self.logger_levels)
        except ValueError as exc:
            raise ValueError(f"bad logger_levels: {exc}; fix {option('logger_levels')}") from None
        return self

    def log_config(self) -> LogConfig:
        return LogConfig(
            self.log_level,
            self.library_log_level,
            LogConfig.parse_logger_levels(self.logger_levels),
            self.log_format,
        )


class ListenOptions(MintSettings):
    host: str = Field("127.0.0.1", description="address to bind (0.0.0.0: every interface)")


class KafkaOptions(MintSettings):
    kafka_bootstrap: str = Field(description="Kafka brokers, host:port[,host:port...]")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="how to reach the brokers: TLS (SSL), SASL, or both"
    )
    kafka_ssl_cafile: FilePath | None = Field(
        None, description="CA certificate that signed the brokers' (none: the system's CAs)"
    )
    kafka_ssl_certfile: FilePath | None = Field(
        None, description="this client's certificate, for brokers that require one"
    )
    kafka_ssl_keyfile: FilePath | None = Field(None, description="its private key")
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism (with SASL_PLAINTEXT or SASL_SSL)"
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user name")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password (a secret)")

    @model_validator(mode="after")
    def _kafka_security_is_complete(self) -> Self:
        protocol = self.kafka_security_protocol
        sasl = {
            "kafka_sasl_mechanism": self.kafka_sasl_mechanism,
            "kafka_sasl_username": self.kafka_sasl_username,
            "kafka_sasl_password": self.kafka_sasl_password,
        }
        tls = {
            "kafka_ssl_cafile": self.kafka_ssl_cafile,
            "kafka_ssl_certfile": self.kafka_ssl_certfile,
            "kafka_ssl_keyfile": self.kafka_ssl_keyfile,
        }
        if protocol.startswith("SASL_"):
            _require(sasl, f"kafka_security_protocol {protocol}")
        else:
            _refuse(sasl, "SASL_PLAINTEXT or SASL_SSL", protocol)
        if not protocol.endswith("SSL"):
            _refuse(tls, "SSL or SASL_SSL", protocol)
        _together("kafka_ssl_certfile", "kafka_ssl_keyfile", tls)
        return self

    def kafka(self) -> KafkaConnection:
        password = self.kafka_sasl_password
        return KafkaConnection(
            self.kafka_bootstrap,
            self.kafka_security_protocol,
            _text(self.kafka_ssl_cafile),
            _text(self.kafka_ssl_certfile),
            _text(self.kafka_ssl_keyfile),
            self.kafka_sasl_mechanism,
            self.kafka_sasl_username,
            password.get_secret_value() if password else None,
        )


# host:port as the S3 client takes it: a name or an IPv4 address, or [an IPv6 one], and
# a port; no scheme, path, query or user (a lone trailing slash it ignores).
S3_ENDPOINT = re.compile(r"(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{1,5}))?/?")


# host:port[,host:port...]: replicas a client spreads its calls over (gRPC's "ipv4:" too).
_ADDRESS = r"(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}"  # name, IPv4 or [IPv6]
ADDRESSES = re.compile(rf"(?:ipv4:|ipv6:)?{_ADDRESS}(?:,{_ADDRESS})*")


def checked_addresses(value: str) -> str:
    """`value` if it is host:port[,host:port...], else ValueError saying how to write it."""
    if ADDRESSES.fullmatch(value) is None:
        raise ValueError(f"{value!r} is not host:port[,host:port...], e.g. registry:50051")
    return value


class S3Options(MintSettings):
    s3_endpoint: str = Field(description="S3 server, host:port")
    s3_access_key: str = Field(description="S3 access key")
    s3_secret_key: SecretStr = Field(description="S3 secret key (a secret)")
    s3_secure: bool = Field(False, description="talk to S3 over HTTPS")
    s3_ca_file: FilePath | None = Field(
        None,
        description="CA certificate that signed S3's, with --s3-secure (none: the system's CAs)",
    )

    @field_validator("s3_endpoint")
    @classmethod
    def _s3_endpoint_is_host_port(cls, endpoint: str) -> str:
        match = S3_ENDPOINT.fullmatch(endpoint)
        if match is None or int(match["port"] or 0) > 65535:
            raise ValueError(
                f"{endpoint!r} is not host:port; give the server's host and port alone, "
                "without http:// or a path (for HTTPS also pass --s3-secure)"
            )
        return endpoint

    @model_validator(mode="after")
    def _s3_ca_needs_https(self) -> Self:
        if self.s3_ca_file is not None and not self.s3_secure:
            raise ValueError(
                f"s3_ca_file is set but S3 is plain HTTP: also pass --s3-secure or set "
                f"MINT_S3_SECURE=true (or drop {option('s3_ca_file')})"
            )
        return self

    def s3(self) -> S3Settings:
        return S3Settings(
            self.s3_endpoint,
            self.s3_access_key,
            self.s3_secret_key.get_secret_value(),
            secure=self.s3_secure,
            ca_file=_text(self.s3_ca_file),
        )


class BlobsOptions(MintSettings):
    blobs_bucket: str = Field("mint", description="bucket of the registry's uploaded blobs")


KEK_FILE_HELP = (
    "file of the key-encryption key that wraps every adapter's data key (a Secret: 64 hex "
    "digits, base64 of 32 bytes, or 32 raw bytes; `openssl rand -hex 32`). Without it no "
    "adapter's weights can be read"
)


class KekOptions(MintSettings):
    kek_file: FilePath = Field(description=KEK_FILE_HELP)

    def kek(self) -> Kek:
        return Kek.from_file(self.kek_file)


class ProjectionOptions(MintSettings):
    projection_bucket: str = Field("mint", description="bucket of the projection (PEFT layout)")
    projection_prefix: str = Field("", description="key prefix of the projection in its bucket")


class EventsOptions(MintSettings):
    events_topic: str = Field(DEFAULT_TOPIC, description="Kafka topic of the adapter events")
    events_partitions: PositiveInt = Field(
        6, description="its partition count (every registry and reader must agree)"
    )


class ResidencyOptions(MintSettings):
    residency_topics_prefix: str = Field(
        "mint.residency", description="prefix of the desired, status and demand topics"
    )

    def residency_topics(self) -> ResidencyTopics:
        return ResidencyTopics(self.residency_topics_prefix)


class ResponsesOptions(MintSettings):
    responses_topic: str = Field(
        "mint.responses",
        description="Kafka topic where nodes record each reply's request for replay "
        "(prompts and outputs: callers' data); '' records nothing",
    )
    responses_retention_hours: PositiveInt = Field(
        168, description="how long the responses topic keeps records (when it creates it)"
    )

    def responses(self) -> ResponsesTopic | None:
        if not self.responses_topic:
            return None
        return ResponsesTopic(self.responses_topic, self.responses_retention_hours * 3_600_000)


class TokensOptions(MintSettings):
    tokens_file: FilePath = Field(description="JSON file of callers' token digests")


class TlsOptions(MintSettings):
    tls_cert_file: FilePath | None = Field(None, description="this server's TLS certificate")
    tls_key_file: FilePath | None = Field(None, description="its private key")
    tls_ca_file: FilePath | None = Field(
        None, description="CA certificate that signs the peers' certificates"
    )
    tls_require_client_cert: bool = Field(
        False, description="accept only clients with a certificate the CA signed (mutual TLS)"
    )

    @model_validator(mode="after")
    def _tls_is_complete(self) -> Self:
        files = {"tls_cert_file": self.tls_cert_file, "tls_key_file": self.tls_key_file}
        _together("tls_cert_file", "tls_key_file", files)
        if self.tls_ca_file is not None and self.tls_cert_file is None:
            raise ValueError(
                "tls_ca_file given without tls_cert_file: without a certificate of its own "
                f"this server would serve plaintext; pass {option('tls_cert_file')} and "
                f"{option('tls_key_file')}, or drop tls_ca_file"
            )
        if self.tls_require_client_cert:
            wanted = {**files, "tls_ca_file": self.tls_ca_file}
            _require(wanted, "tls_require_client_cert")
        return self

    def tls_files(self) -> TlsFiles | None:
        """The server's TLS files; None without a certificate (plaintext)."""
        if self.tls_cert_file is None:
            return None
        return TlsFiles(
            self.tls_cert_file, self.tls_key_file, self.tls_ca_file, self.tls_require_client_cert
        )


class GrpcServerOptions(ListenOptions, TokensOptions, TlsOptions):
    """What every MinT gRPC server takes besides its port."""

    health_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="plaintext gRPC health port with workers of its own, for probes (the "
        "kubelet's gRPC probe speaks no TLS); 0 picks a free one",
    )
    drain_s: NonNegativeFloat = Field(
        2.0,
        description="on SIGTERM, seconds of NOT_SERVING while calls are still taken, so "
        "load balancers notice before the server stops taking them",
    )


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _require(values: Mapping[str, object], needed_by: str) -> None:
    missing = [name for name, value in values.items() if value is None]
    if missing:
        how = "; ".join(f"pass {option(name)}" for name in missing)
        raise ValueError(f"{needed_by} needs {', '.join(missing)}: {how}")


def _refuse(values: Mapping[str, object], protocols: str, protocol: str) -> None:
    given = [name for name, value in values.items() if value is not None]
    if given:
        raise ValueError(
            f"{', '.join(given)} given, but kafka_security_protocol is {protocol}: set "
            f"{option('kafka_security_protocol')} to {protocols}, or drop them"
        )


def _together(first: str, second: str, values: Mapping[str, object]) -> None:
    if (values[first] is None) != (values[second] is None):
        missing = first if values[first] is None else second
        raise ValueError(f"{first} and {second} go together: also pass {option(missing)}")


S = TypeVar("S", bound=MintSettings)


def add_flags(parser: argparse.ArgumentParser, model: type[MintSettings]) -> None:
    """A flag for every setting of `model` (its description as help), and --secrets-dir."""
    CliSettingsSource(model, root_parser=parser)
    parser.add_argument(
        "--secrets-dir",
        type=Path,
        default=os.environ.get(SECRETS_DIR) or None,
        help=f"folder of files named like the variables (default: ${SECRETS_DIR})",
    )
    parser.epilog = HOW_TO_SET


def load(model: type[S], args: argparse.Namespace) -> S:
    """`model` from the flags in `args` (parsed by a parser given `add_flags` of it or of
    a model with more settings), the environment and the secret files. SystemExit saying
    what is missing or wrong, and how to give it."""
    secrets: Path | None = args.secrets_dir
    if secrets is not None and not secrets.is_dir():
        raise SystemExit(
            f"secrets directory {secrets} does not exist: fix --secrets-dir or {SECRETS_DIR}"
        )
    flags: CliSettingsSource[Any] = CliSettingsSource(model)(parsed_args=args)
    try:
        # mypy sees only the fields in the signature, not BaseSettings' source options
        return model(_cli_settings_source=flags, _secrets_dir=secrets)  # type: ignore[call-arg]
    except ValidationError as exc:
        raise SystemExit("\n".join(_explain(e) for e in exc.errors())) from None


def _explain(error: ErrorDetails) -> str:
    if not error["loc"]:  # a check across settings: its message names them
        return str(error["msg"]).removeprefix("Value error, ")
    name = str(error["loc"][0])
    if error["type"] == "missing":
        return f"missing {name}: pass --{name.replace('_', '-')} or set MINT_{name.upper()}"
    problem = str(error["msg"]).removeprefix("Value error, ")
    return f"bad {name} ({problem}): fix {option(name)}"
