"""Prometheus metrics of a registry replica (/metrics on `metrics_port`)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .budget import ByteBudget


class RegistryMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "mint_registry_requests_total",
            "Calls answered, by method and gRPC status code",
            ["method", "code"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "mint_registry_request_seconds",
            "How long calls took, by method (a stream: until it ended)",
            ["method"],
            registry=r,
        )
        self.reads_forwarded = Counter(
            "mint_registry_reads_forwarded_total",
            "Reads of another replica's adapters, by method and outcome (answered: by the "
            "owner; local: the owner was unreachable, so read here from the partition)",
            ["method", "outcome"],
            registry=r,
        )
        self.partitions_owned = Gauge(
            "mint_registry_partitions_owned",
            "Partitions of the events topic this replica writes",
            registry=r,
        )

        self.uploads_refused = Counter(
            "mint_registry_uploads_refused_total",
            "PublishRevision uploads turned away at their header because the upload bytes "
            "in flight would pass --max-upload-bytes-in-flight (RESOURCE_EXHAUSTED)",
            registry=r,
        )
        self.upload_bytes_held = Gauge(
            "mint_registry_upload_bytes_held",
            "Bytes reserved by the uploads in flight (each reserves twice its weights: as "
            "received, and sealed while stored)",
            registry=r,
        )
        self.upload_bytes_budget = Gauge(
            "mint_registry_upload_bytes_budget",
            "Bytes the uploads in flight may reserve at once (--max-upload-bytes-in-flight)",
            registry=r,
        )

        self.downloads_refused = Counter(
            "mint_registry_downloads_refused_total",
            "DownloadWeights calls turned away before reading the blob because the download "
            "bytes in flight would pass --max-download-bytes-in-flight (RESOURCE_EXHAUSTED)",
            registry=r,
        )
        self.download_bytes_held = Gauge(
            "mint_registry_download_bytes_held",
            "Bytes reserved by the downloads in flight (each reserves twice its weights: the "
            "sealed blob, and the weights opened from it while they are sent)",
            registry=r,
        )
        self.download_bytes_budget = Gauge(
            "mint_registry_download_bytes_budget",
            "Bytes the downloads in flight may reserve at once (--max-download-bytes-in-flight)",
            registry=r,
        )

        self.checkpoints_signed = Counter(
            "mint_registry_checkpoints_signed_total",
            "Signed checkpoints of the log this replica wrote",
            registry=r,
        )
        self.checkpoint_failures = Counter(
            "mint_registry_checkpoint_failures_total",
            "Partitions whose checkpoint could not be signed in a round (tried next round; "
            "events past the last checkpoint are not vouched for meanwhile)",
            registry=r,
        )
        self.checkpoint_round = Gauge(
            "mint_registry_checkpoint_round_timestamp_seconds",
            "When the last checkpoint round in which every owned partition was signed ended",
            registry=r,
        )

    def watch_budgets(self, uploads: ByteBudget, downloads: ByteBudget) -> None:
        self.upload_bytes_held.set_function(lambda: uploads.held)
        self.upload_bytes_budget.set(uploads.max_bytes)
        self.download_bytes_held.set_function(lambda: downloads.held)
        self.download_bytes_budget.set(downloads.max_bytes)

    def count_checkpoints(self, signed: int, failed: int) -> None:
        """One signing round: checkpoints written, partitions that failed."""
        self.checkpoints_signed.inc(signed)
        self.checkpoint_failures.inc(failed)
        if not failed:
            self.checkpoint_round.set_to_current_time()

    def count_owned(self, owned: Callable[[], set[int]]) -> None:
        self.partitions_owned.set_function(lambda: len(owned()))

    def observe_call(self, method: str, code: str, seconds: float) -> None:
        self.requests.labels(method, code).inc()
        self.request_seconds.labels(method).observe(seconds)
