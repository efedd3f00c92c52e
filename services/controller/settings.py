"""The controller's settings: Kafka only (it places adapters; it never reads S3)."""

from __future__ import annotations

from pydantic import Field, PositiveFloat, PositiveInt

from mint.settings import (
    KafkaOptions,
    ListenOptions,
    ProcessOptions,
    ResidencyOptions,
    metrics_port,
)


class ControllerSettings(ListenOptions, KafkaOptions, ResidencyOptions, ProcessOptions):
    group: str = Field("mint-controller", description="consumer group the controllers share")
    silence_s: PositiveFloat = Field(4.0, description="seconds of silence that make a node dead")
    hot_rps: PositiveFloat = Field(5.0, description="requests/s per replica of an adapter")
    max_replicas: PositiveInt = Field(3, description="most replicas of one adapter")
    want_idle_s: PositiveFloat = Field(
        600.0,
        description="seconds without demand after which an adapter (unless pinned) is no "
        "longer kept placed",
    )
    metrics_port: int = metrics_port(9467)
