"""Background processes tracked by pid files: start detached, check, stop.

`stop` only ever signals the process recorded in a pid file, and only if it is still the
same process (pid and start time match), so a recycled pid is never killed. Processes are
started in their own session, so stopping signals the whole group (the JVM, weed's
children) and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


def _start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (field 22 of /proc/pid/stat), or None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie has finished running
        return None
    return fields[19]


@dataclass(frozen=True)
class Managed:
    """A named process whose pid file and log live in one state directory."""

    name: str
    state_dir: Path

    @property
    def pid_file(self) -> Path:
        return self.state_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        """The recorded pid if that very process is still running."""
        try:
            record = json.loads(self.pid_file.read_text())
        except (OSError, ValueError):
            return None
        pid = int(record["pid"])
        return pid if _start_time(pid) == record["start_time"] else None

    def running(self) -> bool:
        return self.pid() is not None

    def start(self, argv: list[str], env: dict[str, str] | None = None) -> int:
        """Start `argv` detached, output appended to the log; record it in the pid file."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **(env or {})},
                cwd=self.state_dir,
            )
        record = {"pid": proc.pid, "start_time": _start_time(proc.pid), "argv": argv}
        self.pid_file.write_text(json.dumps(record))
        return proc.pid

    def stop(self, grace_s: float = 20.0) -> bool:
        """SIGTERM the process group, SIGKILL after `grace_s`; True if something was stopped."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while _start_time(pid) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        if _start_time(pid) is not None:
            _signal_group(pid, signal.SIGKILL)
            while _start_time(pid) is not None:
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> None:
        """SIGKILL at once (fault tests); the pid file stays so `stop` can tidy up."""
        pid = self.pid()
        if pid is not None:
            _signal_group(pid, signal.SIGKILL)
            while _start_time(pid) is not None:
                time.sleep(0.05)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log written)"


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)  # started with start_new_session, so pgid == pid
