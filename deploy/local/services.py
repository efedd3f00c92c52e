"""MinT services as local processes (fault tests, the fleet demo): start one, wait until
it prints its `serving on host:port` line, SIGKILL or stop it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

REPO = Path(__file__).resolve().parents[2]
# The one line each service prints when ready ("registry serving on 127.0.0.1:50051 …",
# "controller running"), at the start of a line so no library's log line can pass for it.
READY = re.compile(r"^(?:[\w-]+ )+serving on (\S+)|^controller running$", re.MULTILINE)


@dataclass
class ServiceProcess:
    module: str  # e.g. "services.inference"
    args: list[str]
    log_file: Path
    endpoints: dict[str, str]  # MINT_* variables: the only ones it gets (none from ours)
    proc: subprocess.Popen[bytes] | None = None
    address: str = ""
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> ServiceProcess:
        with self.log_file.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module, *self.args],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env={**_without_settings(os.environ), **self.endpoints, **self.env},
                start_new_session=True,
            )
        return self

    def wait_ready(self, timeout_s: float = 180.0) -> ServiceProcess:
        """Until the service prints that it serves; its log's end if it dies first."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = READY.search(self.log_file.read_text(errors="replace"))
            if found:
                self.address = found.group(1) or ""
                return self
            if self._started().poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"{self.module} did not start; log {self.log_file}:\n"
                    f"{self.log_file.read_text(errors='replace')[-3000:]}"
                )
            time.sleep(0.2)

    def kill(self) -> int:
        """SIGKILL (fault tests); returns the exit status."""
        proc = self._started()
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait(timeout=30)

    def _started(self) -> subprocess.Popen[bytes]:
        if self.proc is None:
            raise RuntimeError(f"{self.module} was never started")
        return self.proc

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


class Stoppable(Protocol):
    def stop(self) -> None: ...


def stop_all(services: Iterable[Stoppable]) -> None:
    """Stop every one at once: each one's graceful stop takes seconds, and they do not
    wait for each other."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        for stopped in [pool.submit(service.stop) for service in services]:
            stopped.result()


def _without_settings(env: Mapping[str, str]) -> dict[str, str]:
    """`env` without MINT_* variables: a service's settings are what it is given."""
    return {name: value for name, value in env.items() if not name.startswith("MINT_")}
