"""The README's demo command runs end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mint.layout import ADAPTER_CONFIG, ADAPTER_WEIGHTS, MANIFEST


def test_demo_publishes_a_loadable_revision(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mint.demo", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    revision = Path(summary["revision_dir"])
    assert sorted(p.name for p in revision.iterdir()) == sorted(
        [ADAPTER_CONFIG, ADAPTER_WEIGHTS, MANIFEST]
    )
    manifest = json.loads((revision / MANIFEST).read_text())
    assert manifest["weights_sha256"] == summary["sha256"]
    blob = tmp_path / "blobs" / "sha256" / summary["sha256"][:2] / summary["sha256"]
    assert blob.read_bytes() == (revision / ADAPTER_WEIGHTS).read_bytes()
