"""The README's demo command runs end to end and shows the update loop: two users'
adapters updated from their own examples by the trainer, evaluated and promoted, served
together in one mixed batch, one rolled back and then erased (its blobs open no more, the
other serves on), and the log audited clean, the erasure reported."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mint.audit.__main__ import main as audit_main
from mint.layout import ADAPTER_CONFIG, ADAPTER_WEIGHTS, MANIFEST


def test_demo_updates_serves_rolls_back_erases_and_audits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
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
        "bob erases his adapter",
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
    verified = capsys.readouterr().out
    assert "ERASED bob/voice" in verified and "erased by bob" in verified, verified
    assert verified.strip().endswith("1 erasures: clean"), verified

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
    # The stored blob is sealed with the adapter's data key: not the bytes it holds.
    sha256 = manifest["weights_sha256"]
    [blob] = (out / "blobs").glob(f"*/sha256/{sha256[:2]}/{sha256}")
    assert weights[:4096] not in blob.read_bytes()
    assert (out / "keys" / blob.parts[-4]).exists() and (out / "kek").stat().st_mode & 0o077 == 0

    # Bob's adapter erased: none of its blobs (2 revisions' weights, 2 updates' examples)
    # opens or is left; alice's serves on unchanged; bob's history says when.
    erasure = summary["erasure"]
    assert erasure["adapter"] == "bob/voice" and erasure["erased_at"]
    assert (erasure["blobs"], erasure["opened"], erasure["left"]) == (4, 0, 0)
    assert erasure["other_serves"] is True
    assert summary["adapters"]["bob"]["erased_at"] == erasure["erased_at"]
    assert summary["adapters"]["alice"]["erased_at"] == ""
    assert f"bob/voice erased at {erasure['erased_at']}: 0 of its 4 blobs open" in shown

    audit = summary["audit"]
    # base + 2 adapters x (created, gate, 2 x (requested, published, latest, evaluated,
    # stable, finished)) + bob's rollback + bob's erasure; blobs: 2 revisions each, bob's
    # found erased (not a problem: the erasure explains them)
    assert audit == {
        "events": 1 + 2 * 14 + 1 + 1,
        "streams": 3,
        "blobs": 4,
        "erasures": ["bob/voice"],
        "clean": True,
    }
    assert "4 blobs checked, 1 erasure: clean" in shown
