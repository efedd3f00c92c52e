"""The audit command's settings (Kafka back end): the events topic for every command,
and S3 for `verify`, which checks the blobs and, given its bucket, the projection."""

from __future__ import annotations

from pydantic import Field

from mint.settings import BlobsOptions, EventsOptions, KafkaOptions, KekOptions, S3Options


class AuditSettings(KafkaOptions, EventsOptions):
    """`replay` and `provenance` read the log only."""


class AuditVerifySettings(AuditSettings, S3Options, BlobsOptions, KekOptions):
    projection_bucket: str | None = Field(
        None, description="also check the projection's revision files in this bucket"
    )
    projection_prefix: str = Field("", description="key prefix of the projection")
