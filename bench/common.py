"""What the benchmarks share: servers to run against, and recording results."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deploy.local.stack import Stack

RESULTS = Path(__file__).resolve().parent / "results"


@contextmanager
def servers() -> Iterator[dict[str, str]]:
    """The MINT_* endpoints from the environment, or a temporary local stack."""
    keys = ("MINT_KAFKA_BOOTSTRAP", "MINT_S3_ENDPOINT", "MINT_S3_ACCESS_KEY", "MINT_S3_SECRET_KEY")
    if all(k in os.environ for k in keys):
        yield {k: os.environ[k] for k in keys}
        return
    with tempfile.TemporaryDirectory(prefix="mint-bench-") as state:
        stack = Stack(Path(state))
        try:
            print(f"starting a temporary Kafka + S3 ({stack.up():.1f} s)", flush=True)
            yield stack.endpoints.as_env()
        finally:
            stack.down()


def record(name: str, result: dict[str, Any]) -> Path:
    """Write bench/results/<name>.json with the machine it ran on."""
    RESULTS.mkdir(exist_ok=True)
    result = {
        "benchmark": name,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        **result,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
