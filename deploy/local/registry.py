"""Run registry replicas as local processes (tests, benchmarks, demos of failover)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mint.rpc.auth import token_digest

REPO = Path(__file__).resolve().parents[2]


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
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 120.0) -> RegistryProcess:
        """Start and wait until it serves (it first takes its partitions)."""
        cmd = [
            sys.executable,
            "-m",
            "services.registry",
            "serve",
            "--port",
            str(self.port),
            "--topic",
            self.topic,
            "--partitions",
            str(self.partitions),
            "--txn-prefix",
            self.topic,
            "--bucket",
            self.topic,
            "--tokens-file",
            str(self.tokens_file),
        ]
        with self.log_file.open("wb") as out:
            self.proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env={**os.environ, **self.endpoints},
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while "registry serving" not in self.log_file.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"registry replica did not start; log {self.log_file}:\n"
                    f"{self.log_file.read_text(errors='replace')[-3000:]}"
                )
            time.sleep(0.2)
        return self

    def kill(self) -> int:
        """SIGKILL (fault tests); returns the exit status."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        return self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
