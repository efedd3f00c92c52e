"""Run registry replicas as local processes (tests, benchmarks, demos of failover)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from mint.backends.local_blobs import local_kek
from mint.rpc.auth import token_digest

from .services import ServiceProcess


def write_tokens(path: Path, tokens: dict[str, dict[str, object]]) -> Path:
    """A tokens file: {token: {"principal": ..., "tenants": [...], "admin": bool}}."""
    entries = [{"sha256": token_digest(token), **spec} for token, spec in tokens.items()]
    path.write_text(json.dumps({"tokens": entries}))
    return path


@dataclass
class RegistryProcess:
    """One `python -m services.registry serve --backend kafka` replica."""

    port: int
    topic: str
    tokens_file: Path
    log_file: Path
    endpoints: dict[str, str]  # MINT_* variables
    partitions: int = 6
    replication: int = 1  # 3 on a 3-broker stack (fault tests)
    extra_args: list[str] = field(default_factory=list)  # more `serve` flags
    metrics_port: int = 0  # 0: no /metrics (many replicas on one machine)
    # The KEK; by default one made beside the tokens file (shared by replicas started
    # from the same folder, as they must share it).
    kek_file: Path | None = None
    process: ServiceProcess | None = None

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def kek_path(self) -> Path:
        path = self.kek_file or self.tokens_file.parent / "kek"
        local_kek(path)  # made on first use
        return path

    def start(self, timeout_s: float = 120.0) -> RegistryProcess:
        """Start and wait until it serves (it first takes its partitions)."""
        args = ["serve", "--port", str(self.port), "--events-topic", self.topic]
        args += ["--events-partitions", str(self.partitions)]
        args += ["--replication", str(self.replication), "--txn-prefix", self.topic]
        args += ["--blobs-bucket", self.topic, "--tokens-file", str(self.tokens_file)]
        args += ["--metrics-port", str(self.metrics_port), "--kek-file", str(self.kek_path)]
        args += self.extra_args
        self.process = ServiceProcess("services.registry", args, self.log_file, self.endpoints)
        self.process.start().wait_ready(timeout_s)
        return self

    def kill(self) -> int:
        """SIGKILL (fault tests); returns the exit status."""
        if self.process is None:
            raise RuntimeError("the registry was never started")
        return self.process.kill()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
