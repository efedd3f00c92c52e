"""The audit command's settings (Kafka back end): the events topic for every command,
and S3 for `verify`, which checks the blobs and, given its bucket, the projection;
`reproduce` reads the responses topic and replays through a router (or a node)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, FilePath, NonNegativeFloat, SecretStr

from mint.blobs.collector import DEFAULT_GRACE_S, DEFAULT_LEASE_S
from mint.settings import (
    BlobsOptions,
    EventsOptions,
    KafkaOptions,
    KekOptions,
    MintSettings,
    ProcessOptions,
    ResponsesOptions,
    S3Options,
)


class AuditSettings(KafkaOptions, EventsOptions, ProcessOptions):
    """`replay` and `provenance` read the log only."""


class AuditVerifySettings(AuditSettings, S3Options, BlobsOptions, KekOptions):
    projection_bucket: str | None = Field(
        None,
        description="also check the projection in this bucket: every object against what "
        "the log writes there",
    )
    projection_prefix: str = Field("", description="key prefix of the projection")


class AuditReproduceSettings(AuditSettings, ResponsesOptions):
    router: str = Field("127.0.0.1:50060", description="HOST:PORT of a router (or a node)")
    token: SecretStr = Field(
        description="a token of the caller the response was served for (or an admin's)"
    )
    router_ca_file: FilePath | None = Field(
        None, description="CA that signs the router's certificate (none: plaintext)"
    )
    wait_s: NonNegativeFloat = Field(
        10.0, description="how long to wait for a record not written yet (nodes send late)"
    )


class GcOptions(MintSettings):
    """What `gc` needs beyond the log and the blobs (all a --backend embedded run reads)."""

    grace_s: NonNegativeFloat = Field(
        DEFAULT_GRACE_S, description="leave blobs written less than this many seconds ago"
    )
    lease_s: NonNegativeFloat = Field(
        DEFAULT_LEASE_S,
        description="seconds between marking and deleting: longer than any command takes "
        "from storing its blob to appending its event",
    )
    metrics_file: Path | None = Field(
        None, description="write the run's figures here, in Prometheus' text format"
    )


class AuditGcSettings(AuditSettings, S3Options, BlobsOptions, KekOptions, GcOptions):
    """`gc`: the log, the blobs, and how to collect."""
