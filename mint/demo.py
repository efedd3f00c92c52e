"""End-to-end demo of the update loop on the embedded back end (a SQLite log and a local
blob folder; no servers).

A base model is built in code and registered. Two users each create an adapter whose
`stable` channel is gated on the update suite, and send two updates with their own
examples. The trainer (the same code as `mint-trainer`, run in process over the log)
trains each revision from the last, publishes it with provenance, scores the user's
examples on the serving path, and the gate promotes it. Both users' stable revisions are
then served in one mixed batch beside the bare base (one of them checked token for token
against PEFT reading the revision back from its PEFT layout) and one user rolls back.
That user then erases their adapter: its data key is destroyed and its blobs deleted, so
none of them opens again, while the other user's adapter serves on. Last the log's heads
are signed (Ed25519) and the whole log is audited: every stream's hash chain, every
remaining blob's sha256, the signed checkpoint, and who erased what, when.

  python -m mint.demo [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from mint.audit.verify import verify
from mint.backends.local_blobs import LocalBlobStore, local_kek
from mint.backends.sqlite_checkpoints import SqliteCheckpointStore
from mint.backends.sqlite_log import SqliteEventLog
from mint.blobs.port import adapter_blobs_prefix
from mint.demo_serving import serve_mixed, write_peft_layout
from mint.domain.adapter import Adapter
from mint.domain.errors import Erased
from mint.domain.names import AdapterRef
from mint.eventlog.checkpoints import SigningKey
from mint.eventlog.signer import CheckpointSigner
from mint.models.base import build_base, fingerprint, tiny_llama_config
from mint.registry import Principal, Registry
from mint.training.loop import SUITE, UpdateResult, build_loop, drain
from mint.training.port import LocalRegistry
from mint.training.tuning import Hyperparameters

OPS = Principal("ops", frozenset({"*"}), admin=True)
TRAINER = Principal("trainer", frozenset({"*"}), service=True)
HP = Hyperparameters(steps=12, learning_rate=2e-2, rank=8)
PROMPT = "Greet me: "


@dataclass(frozen=True)
class User:
    principal: Principal
    ref: AdapterRef
    replies: tuple[str, ...]  # what this user teaches their adapter to say

    def examples(self, round_: int) -> list[dict[str, str]]:
        return [{"prompt": PROMPT, "completion": reply} for reply in self.replies] + [
            {"prompt": f"Say hi #{round_}{i}: ", "completion": reply}
            for i, reply in enumerate(self.replies)
        ]


USERS = (
    User(Principal("alice", frozenset({"alice"})), AdapterRef("alice", "voice"), ("Ahoy!",)),
    User(Principal("bob", frozenset({"bob"})), AdapterRef("bob", "voice"), ("Good day.",)),
)


def run(out: Path, console: Console) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    blobs = LocalBlobStore(out, local_kek(out / "kek"))
    registry = Registry(SqliteEventLog(out / "events.db"), blobs)
    base = build_base(tiny_llama_config(), seed=0)
    base_fp = fingerprint(base)
    shapes = {k: tuple(v.shape) for k, v in base.state_dict().items()}
    registry.register_base(OPS, "tiny-llama", base_fp, shapes, uuid.uuid4().hex)
    count = sum(p.numel() for p in base.parameters())
    console.rule("[bold]1. a base and two users' adapters")
    console.print(f"registered base tiny-llama ({count:,} parameters), {base_fp[:16]}…")
    for user in USERS:
        registry.create_adapter(user.principal, user.ref, base_fp, uuid.uuid4().hex)
        registry.set_gate(user.principal, user.ref, "stable", SUITE, uuid.uuid4().hex)
        console.print(f"{user.principal.name} created {user.ref}; stable needs a passing {SUITE}")

    console.rule("[bold]2. updates from each user's own examples")
    results = _update(registry, console)

    console.rule("[bold]3. served together in one mixed batch")
    adapters = {u.principal.name: registry.get(u.principal, u.ref) for u in USERS}
    alice = adapters["alice"]
    revision_dir = write_peft_layout(registry, alice, "stable", base_fp, out)
    served = serve_mixed(registry, adapters, base_fp, revision_dir, PROMPT)
    for who, text in served["texts"].items():
        console.print(f"  {who:>14} → {text!r}")
    console.print(
        f"one forward pass per step for all {served['batch']}; alice's tokens equal PEFT's "
        f"reading {revision_dir.relative_to(out)}: {served['alice_equals_peft']}"
    )

    console.rule("[bold]4. bob rolls back")
    bob = USERS[1]
    before = adapters["bob"].channels["stable"]
    rolled = registry.move_channel(
        bob.principal, bob.ref, "stable", before - 1, uuid.uuid4().hex, reason="rollback"
    ).adapter
    console.print(f"{bob.ref} stable: revision {before} → {rolled.channels['stable']}")

    console.rule("[bold]5. bob erases his adapter")
    erasure = _erase(registry, blobs, bob, console)
    again = serve_mixed(registry, {"alice": alice}, base_fp, revision_dir, PROMPT)
    erasure["other_serves"] = again["tokens"]["alice@stable"] == served["tokens"]["alice@stable"]
    console.print(
        f"alice@stable still serves, token for token as before: {erasure['other_serves']}"
    )

    console.rule("[bold]6. the log signed and audited")
    public_key = _sign(registry, out, console)
    report = verify(registry.log.read_all(), registry.blobs)
    _show_histories(registry, console)
    for erased in report.erasures:
        console.print(f"erased: {erased}")
    verdict = "clean" if report.clean else f"{len(report.problems)} problems"
    console.print(
        f"audit: {report.events} events in {report.streams} streams, "
        f"{report.blobs_checked} blobs checked, {len(report.erasures)} erasure: {verdict}"
    )
    console.print(
        f"more: python -m mint.audit verify --backend embedded --data-dir {out} "
        f"--public-key {public_key} (also: replay, provenance alice/voice)"
    )
    return {
        "updates": [r.__dict__ for r in results],
        "adapters": {name: _summary(registry.get(OPS, a.ref)) for name, a in adapters.items()},
        "served": served,
        "revision_dir": str(revision_dir),
        "erasure": erasure,
        "audit": {
            "events": report.events,
            "streams": report.streams,
            "blobs": report.blobs_checked,
            "erasures": [e.stream_id for e in report.erasures],
            "clean": report.clean,
        },
    }


def _sign(registry: Registry, out: Path, console: Console) -> Path:
    """Sign the log's heads as a registry with a signing key does; the public key file."""
    key = SigningKey.generate()
    public_key = out / "signing.pub"
    public_key.write_bytes(key.public_pem())
    store = SqliteCheckpointStore(out / "events.db")
    signer = CheckpointSigner(key, store, registry.log.read_partition, lambda: (0,), "demo")
    signed = signer.sign_once()
    store.close()
    console.print(f"signed {signed} checkpoint of the log's heads with Ed25519 key {key.key_id}")
    return public_key


def _erase(
    registry: Registry, blobs: LocalBlobStore, user: User, console: Console
) -> dict[str, Any]:
    """Erase the user's adapter: its tombstone appended, its data key destroyed, its blobs
    (weights and examples) deleted; then try to open each of them again."""
    adapter = registry.get(user.principal, user.ref)
    digests = {r.weights_sha256 for r in adapter.revisions}
    digests |= {u.examples_sha256 for u in adapter.updates}
    erased = registry.erase(user.principal, user.ref, uuid.uuid4().hex).adapter
    opened, refusal = 0, ""
    for sha256 in sorted(digests):
        try:
            blobs.get(adapter.adapter_id, sha256)
            opened += 1
        except Erased as exc:
            refusal = str(exc)
    folder = blobs.root / adapter_blobs_prefix(adapter.adapter_id)
    left = sum(1 for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0
    console.print(
        f"{user.ref} erased at {erased.erased_at}: {opened} of its {len(digests)} blobs "
        f"open, {left} left on disk; reading one says: {refusal}"
    )
    return {
        "adapter": str(user.ref),
        "erased_at": erased.erased_at,
        "blobs": len(digests),
        "opened": opened,
        "left": left,
    }


def _update(registry: Registry, console: Console) -> list[UpdateResult]:
    """Two rounds of requests; after each, the trainer applies what the log holds."""
    loop = build_loop(
        LocalRegistry(registry, TRAINER),
        registry.blobs,
        lambda: build_base(tiny_llama_config(), seed=0),
        fingerprint(build_base(tiny_llama_config(), seed=0)),
        HP,
        on_stage=lambda job, stage: None,
    )
    table = Table("user", "update", "revision", "loss: parent → new", "outcome")
    results, checkpoint = [], None
    for round_ in (1, 2):
        for user in USERS:
            registry.request_update(
                user.principal,
                user.ref,
                json.dumps({"examples": user.examples(round_)}).encode(),
                f"{user.principal.name}-update-{round_}",
            )
        applied, checkpoint = drain(registry.log, loop, checkpoint)
        for result in applied:
            m = result.metrics
            table.add_row(
                result.update_id.split("-")[0],
                result.update_id,
                str(result.revision),
                f"{m['parent_loss']:.3f} → {m['loss']:.3f}",
                result.outcome,
            )
        results += applied
    console.print(table)
    return results


def _show_histories(registry: Registry, console: Console) -> None:
    for user in USERS:
        table = Table("v", "event", "by", title=str(user.ref), title_justify="left")
        for r in registry.history(OPS, user.ref):
            e = r.envelope
            table.add_row(str(e.stream_version), e.event_type.rsplit(".", 1)[1], e.actor)
        console.print(table)


def _summary(adapter: Adapter) -> dict[str, Any]:
    return {
        "revisions": [
            {
                "number": r.number,
                "parents": list(r.parents),
                "training_run_id": r.provenance.training_run_id,
                "dataset_fingerprints": list(r.provenance.dataset_fingerprints),
                "evaluations": [e.metrics for e in r.evaluations],
            }
            for r in adapter.revisions
        ],
        "channels": dict(adapter.channels),
        "finished": {k: v.outcome for k, v in adapter.finished.items()},
        "erased_at": adapter.erased_at,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m mint.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(".mint/demo"),
        help="where the log, blobs and projection go; replaced on each run (default: %(default)s)",
    )
    args = parser.parse_args()
    # transformers deprecation notices raised from inside peft: not actionable here.
    warnings.filterwarnings("ignore", category=FutureWarning)
    summary = run(args.out, Console(highlight=False))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
