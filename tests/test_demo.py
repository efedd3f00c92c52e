"""The README's demo command runs end to end."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from mint.layout import ADAPTER_CONFIG, ADAPTER_WEIGHTS, MANIFEST


def test_demo_publishes_promotes_and_reloads(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "mint.demo", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout[result.stdout.index("{\n") :])
    assert "hash chain intact" in result.stdout
    assert summary["events"] == 8  # created, 2 x (published, latest), gate, eval, stable
    revision = Path(summary["revision_dir"])
    assert revision.name == "1"
    assert sorted(p.name for p in revision.iterdir()) == sorted(
        [ADAPTER_CONFIG, ADAPTER_WEIGHTS, MANIFEST]
    )
    manifest = json.loads((revision / MANIFEST).read_text())
    assert manifest["weights_sha256"] == summary["sha256"]
    # The stored blob is sealed with the adapter's data key: not the bytes it holds.
    [blob] = (out / "blobs").glob(f"*/sha256/{summary['sha256'][:2]}/{summary['sha256']}")
    weights = (revision / ADAPTER_WEIGHTS).read_bytes()
    assert hashlib.sha256(weights).hexdigest() == summary["sha256"]
    assert weights[:4096] not in blob.read_bytes()
    assert (out / "keys" / blob.parts[-4]).exists() and (out / "kek").stat().st_mode & 0o077 == 0
    served = summary["served"]
    assert served["batch"] == 4 and served["stable_equals_peft"] is True
    assert len({tuple(t) for t in served["tokens"].values()}) == 4, "each ask differs"
