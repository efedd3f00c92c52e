"""The projector's settings: the events topic in, the projection bucket out."""

from __future__ import annotations

import os

from pydantic import Field, PositiveInt

from mint.settings import (
    BlobsOptions,
    EventsOptions,
    KafkaOptions,
    KekOptions,
    ListenOptions,
    ProcessOptions,
    ProjectionOptions,
    S3Options,
    metrics_port,
)

from .sink import DEFAULT_CONCURRENCY


class ProjectorSettings(
    KafkaOptions,
    S3Options,
    BlobsOptions,
    KekOptions,
    ProjectionOptions,
    EventsOptions,
    ProcessOptions,
):
    """What `rebuild` needs; `run` needs a little more."""

    s3_concurrency: PositiveInt = Field(
        DEFAULT_CONCURRENCY,
        description="S3 writes in flight at once (1: one at a time)",
    )


class ProjectorRunSettings(ProjectorSettings, ListenOptions):
    group: str = Field("mint-projector", description="consumer group the projectors share")
    instance_id: str | None = Field(
        default_factory=lambda: os.environ.get("HOSTNAME") or None,
        description="static group membership: a restart under the same id resumes at once "
        "(default: $HOSTNAME, the pod name on Kubernetes)",
    )
    metrics_port: int = metrics_port(9464)
