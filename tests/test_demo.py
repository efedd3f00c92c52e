"""The README's demo command runs end to end and shows the update loop: two users'
adapters updated from their own examples by the trainer, evaluated and promoted, served
together in one mixed batch, one rolled back, and the log audited clean."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from mint.audit.__main__ import main as audit_main
from mint.layout import ADAPTER_CONFIG, ADAPTER_WEIGHTS, MANIFEST


def test_demo_updates_serves_rolls_back_and_audits(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "mint.demo", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    shown = result.stdout
    summary = json.loads(shown[shown.index("{\n") :])
    for step in (
        "two users' adapters",
        "own examples",
        "mixed batch",
        "rolls back",
        "signed and audited",
    ):
        assert step in shown

    updates = summary["updates"]
    assert [u["update_id"] for u in updates] == [
        "alice-update-1",
        "bob-update-1",
        "alice-update-2",
        "bob-update-2",
    ]
    assert all(u["outcome"] == "promoted" for u in updates)
    assert all(u["metrics"]["loss"] < u["metrics"]["parent_loss"] for u in updates)
    for name, adapter in summary["adapters"].items():
        revisions = adapter["revisions"]
        assert [r["parents"] for r in revisions] == [[], [1]]
        for n, revision in enumerate(revisions, start=1):
            assert revision["training_run_id"].startswith(f"update-{name}-update-{n}@")
            assert len(revision["dataset_fingerprints"]) == 1
        assert adapter["finished"] == {
            f"{name}-update-1": "promoted",
            f"{name}-update-2": "promoted",
        }
    assert summary["adapters"]["alice"]["channels"] == {"latest": 2, "stable": 2}
    assert summary["adapters"]["bob"]["channels"] == {"latest": 2, "stable": 1}  # rolled back
    assert "revision 2 → 1" in shown

    assert "signed 1 checkpoint of the log's heads" in shown
    signed = ["--backend", "embedded", "--data-dir", str(out), "--public-key"]
    assert audit_main(["verify", *signed, str(out / "signing.pub")]) == 0  # as the demo says

    served = summary["served"]
    assert served["batch"] == 3 and served["alice_equals_peft"] is True
    assert len({tuple(t) for t in served["tokens"].values()}) == 3, "each row differs"
    revision = Path(summary["revision_dir"])
    assert sorted(p.name for p in revision.iterdir()) == sorted(
        [ADAPTER_CONFIG, ADAPTER_WEIGHTS, MANIFEST]
    )
    manifest = json.loads((revision / MANIFEST).read_text())
    weights = (revision / ADAPTER_WEIGHTS).read_bytes()
    assert hashlib.sha256(weights).hexdigest() == manifest["weights_sha256"]

    audit = summary["audit"]
    # base + 2 adapters x (created, gate, 2 x (requested, published, latest, evaluated,
    # stable, finished)) + bob's rollback
    assert audit == {"events": 1 + 2 * 14 + 1, "streams": 3, "blobs": 4, "clean": True}
    assert "blobs re-hashed: clean" in shown
