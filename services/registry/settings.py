"""The registry's settings. The Kafka back end needs Kafka and S3, and lists adapters
from the projection (the projector's bucket and prefix); the embedded one (SQLite and a
local folder, for development) needs neither and lists by reading its log."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, FilePath, PositiveFloat, PositiveInt, SecretStr

from mint.rpc.tls import TlsFiles
from mint.settings import (
    KEK_FILE_HELP,
    BlobsOptions,
    EventsOptions,
    GrpcServerOptions,
    KafkaOptions,
    ProcessOptions,
    ProjectionOptions,
    ResidencyOptions,
    S3Options,
    grpc_port,
    metrics_port,
)


class EmbeddedRegistrySettings(GrpcServerOptions, ProcessOptions):
    port: int = grpc_port(50051)
    data_dir: Path = Field(
        Path(".mint/registry"), description="embedded back end: where the SQLite log and blobs live"
    )
    max_upload_bytes_in_flight: PositiveInt | None = Field(
        None,
        description="bytes that concurrent uploads may hold at once (twice each one's weights: "
        "as received, and sealed); an upload that does not fit gets RESOURCE_EXHAUSTED (retry "
        "later). Default: an eighth of the memory the process may use, at least one largest",
    )
    max_download_bytes_in_flight: PositiveInt | None = Field(
        None,
        description="bytes that concurrent DownloadWeights calls may hold at once (twice each "
        "one's weights: sealed, and opened); a download that does not fit gets "
        "RESOURCE_EXHAUSTED (retry later). Default: an eighth of the memory the process may "
        "use, at least one largest",
    )
    grace_s: PositiveFloat = Field(10.0, description="seconds to drain calls on SIGTERM")
    metrics_port: int = metrics_port(9468)
    kek_file: FilePath | None = Field(
        None,
        description=KEK_FILE_HELP
        + "; embedded back end: by default <data-dir>/kek, made on first start",
    )
    checkpoint_signing_key: SecretStr | None = Field(
        None,
        description="Ed25519 private key, PEM (a secret; `openssl genpkey -algorithm "
        "ed25519`): every checkpoint_every_s this replica signs the heads of the streams "
        "that changed in the partitions it owns, so `mint-audit verify --public-key` "
        "detects a rewritten, truncated or deleted history. None: nothing is signed",
    )
    checkpoint_every_s: PositiveFloat = Field(
        10.0, description="seconds between two checkpoint rounds (with a signing key)"
    )


class RegistrySettings(
    EmbeddedRegistrySettings,
    KafkaOptions,
    S3Options,
    BlobsOptions,
    ProjectionOptions,
    EventsOptions,
    ResidencyOptions,
):
    kek_file: FilePath = Field(description=KEK_FILE_HELP)
    replication: PositiveInt = Field(
        1, description="replicas of the events topic (3 in production)"
    )
    txn_prefix: str = Field(
        "mint-registry",
        description="transactional id prefix; the replicas of one registry share it",
    )
    advertise_host: str = Field(
        "127.0.0.1",
        description="host at which the other replicas tell clients to find this one (the "
        "pod IP): a command sent to a replica that does not own its adapter is answered "
        "with the owner's address",
    )

    peer_server_name: str = Field(
        "",
        description="the name in the replicas' TLS certificates, checked when a read is "
        "passed to the replica owning its adapter (dialled at its pod IP, which the "
        "certificate does not name); empty: the address dialled",
    )

    def peer_tls(self) -> TlsFiles | None:
        """How to dial the other replicas: TLS verified against tls_ca_file when this one
        serves TLS (all replicas of a registry do alike)."""
        return TlsFiles(ca_file=self.tls_ca_file) if self.tls_cert_file is not None else None

    def advertised(self) -> str:
        """This replica's address as its claims name it ("" while its port is not fixed)."""
        return f"{self.advertise_host}:{self.port}" if self.port else ""
