"""The trainer (`python -m streams.trainer`, a subprocess) against real Kafka, S3 and a
registry server: two users each send 5 updates with their own examples, and the trainer
is SIGKILLed 10 times meanwhile, a random moment into each stage twice, in the loop's
order. Each adapter ends with 5 revisions whose parents chain, each naming its exact
request, every request applied exactly once (one revision, one evaluation, one finish
each), and the last revision's loss on the user's examples (scored on the serving path)
below the bare base's (revision 0)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from minio import Minio

from mint.backends.kafka import KafkaConnection
from mint.backends.kafka_log import KafkaEventLog
from mint.backends.s3_blobs import S3BlobStore
from mint.client import Client
from mint.models.base import build_base, fingerprint, tiny_llama_config
from mint.registry import Principal, Registry
from mint.rpc.auth import TokenTable, token_digest
from mint.serving.requests import RevisionRef
from mint.tokenizer import VOCAB_SIZE, byte_tokenizer
from mint.training.loop import STAGES
from mint.training.scoring import Scorer
from mint.training.tuning import tokenized
from mint.validation.examples import parse_examples
from services.registry.server import build_server
from tests.keys import TEST_KEK, kek_file

KILLS = 10
UPDATES = 5
TOKENS = {
    "admin": Principal("ops", frozenset({"*"}), admin=True),
    "trainer": Principal("trainer", frozenset({"*"}), service=True),
    "alice": Principal("alice", frozenset({"acme"})),
    "bob": Principal("bob", frozenset({"bravo"})),
}
USERS = {"alice": ("acme/notes", "alpha"), "bob": ("bravo/notes", "bravo")}
SUITE = "user-examples"
REPO = Path(__file__).resolve().parents[2]


def user_examples(word: str, n: int) -> list[dict[str, str]]:
    return [{"prompt": f"{word} says {n}{i}: ", "completion": f"{word} {word}."} for i in range(2)]


class TrainerProcess:
    """Trainers forked from `tests.streams.trainer_forks` (torch imported once); their
    stage lines counted as they come."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self.stages: list[str] = []  # the stages begun, in order, across restarts
        self.seen = threading.Condition()
        self.forks = subprocess.Popen(
            [sys.executable, "-m", "tests.streams.trainer_forks", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env=env,
        )
        threading.Thread(target=self._read, daemon=True).start()
        self.pid = 0

    def _read(self) -> None:
        assert self.forks.stderr is not None
        with self.log.open("a") as out:
            for line in self.forks.stderr:
                out.write(line)
                stage = line.rstrip().rpartition(": ")[2]
                if stage in STAGES:
                    with self.seen:
                        self.stages.append(stage)
                        self.seen.notify_all()

    def start(self) -> None:
        assert self.forks.stdin is not None and self.forks.stdout is not None
        self.forks.stdin.write("start\n")
        self.forks.stdin.flush()
        self.pid = int(self.forks.stdout.readline())

    def wait_stage(self, stage: str, timeout_s: float) -> bool:
        """True once the trainer begins `stage` (after now)."""
        with self.seen:
            seen = len(self.stages)
            return self.seen.wait_for(lambda: stage in self.stages[seen:], timeout_s)

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self._gone(30)

    def _gone(self, timeout_s: float) -> bool:
        """True once the trainer is gone (the fork server reaps its children)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        if self.pid and not self._gone(0):
            os.kill(self.pid, signal.SIGTERM)
            if not self._gone(30):
                self.kill()
        self.forks.kill()
        self.forks.wait()


@pytest.fixture
def registry_server(kafka: KafkaConnection, s3: Minio, unique: str) -> Iterator[dict[str, str]]:
    log = KafkaEventLog(kafka, unique, partitions=2, txn_prefix=unique)
    registry = Registry(log, S3BlobStore(s3, unique, TEST_KEK))
    server, port = build_server(
        registry, TokenTable((token_digest(t), p) for t, p in TOKENS.items())
    )
    yield {"target": f"127.0.0.1:{port}", "topic": unique, "bucket": unique}
    server.stop(grace=1).wait()
    log.close()


def _finished(client: Client, ref: str) -> int:
    return sum(e.event_type.endswith("UpdateFinished") for e in client.history(ref))


@pytest.mark.timeout(240)
def test_updates_apply_exactly_once_through_ten_kills(
    registry_server: dict[str, str], endpoints: dict[str, str], s3: Minio, tmp_path: Path
) -> None:
    base = build_base(tiny_llama_config(vocab=VOCAB_SIZE), seed=0)
    base_fp = fingerprint(base)
    target = registry_server["target"]
    with Client(target, token="admin") as admin:
        admin.register_base("tiny", base_fp, {k: v.shape for k, v in base.state_dict().items()})
    clients = {user: Client(target, token=user) for user in USERS}
    sent: dict[str, list[str]] = {}
    for user, (ref, word) in USERS.items():
        clients[user].create_adapter(ref, base_fp)
        clients[user].set_gate(ref, "stable", SUITE)
        sent[ref] = []
        for n in range(UPDATES):
            rid = f"{user}-{n}-{uuid.uuid4().hex[:6]}"
            clients[user].request_update(ref, user_examples(word, n), request_id=rid)
            sent[ref].append(rid)

    args = [
        *("--registry", target, "--events-topic", registry_server["topic"]),
        *("--blobs-bucket", registry_server["bucket"], "--group", registry_server["topic"]),
        *("--instance-id", "trainer-0", "--metrics-port", "0", "--device", "cpu"),
        *("--steps", "4", "--learning-rate", "0.02", "--rank", "4"),
        *("--kek-file", str(kek_file(tmp_path))),  # it reads the sealed blobs
    ]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MINT_")},
        **endpoints,
        "MINT_REGISTRY_TOKEN": "trainer",
        "OMP_NUM_THREADS": "1",
    }
    trainer = TrainerProcess(args, env, tmp_path / "trainer.log")
    rng = random.Random()
    # Every stage twice, in the loop's order, so that each kill's stage is one the resumed
    # update still has ahead (in a random order, a kill could wait a whole update for its
    # stage, and the 10 updates could run out before the 10 kills).
    targets = [*STAGES, *STAGES]
    kills = 0
    try:
        trainer.start()
        for target in targets[:KILLS]:
            # Killed a moment into the stage (at its start, or during it: a stage takes
            # some 15-40 ms here).
            if not trainer.wait_stage(target, timeout_s=90):
                break
            time.sleep(rng.uniform(0, 0.015))
            trainer.kill()
            kills += 1
            trainer.start()
        deadline = time.monotonic() + 120
        while any(_finished(clients[u], ref) < UPDATES for u, (ref, _) in USERS.items()):
            assert time.monotonic() < deadline, (tmp_path / "trainer.log").read_text()[-4000:]
            time.sleep(0.5)
    finally:
        trainer.stop()
    assert kills == KILLS, (tmp_path / "trainer.log").read_text()[-4000:]

    scorer = Scorer(
        build_base(tiny_llama_config(vocab=VOCAB_SIZE), seed=0), base_fp, ("q_proj", "v_proj")
    )
    blobs = S3BlobStore(s3, registry_server["bucket"], TEST_KEK)
    tokenizer = byte_tokenizer()
    for user, (ref, word) in USERS.items():
        client = clients[user]
        adapter = client.get_adapter(ref)
        history = client.history(ref)
        counts = Counter(e.event_type.rsplit(".", 1)[1] for e in history)
        assert counts["RevisionPublished"] == counts["UpdateFinished"] == UPDATES, counts
        assert counts["EvaluationRecorded"] == UPDATES, counts
        assert [r.parents for r in adapter.revisions] == [(), (1,), (2,), (3,), (4,)]
        for revision, rid in zip(adapter.revisions, sent[ref], strict=True):
            assert revision.provenance.training_run_id.startswith(f"update-{rid}@")
            (evaluation,) = revision.evaluations
            assert evaluation.suite == SUITE
        mine = [e for n in range(UPDATES) for e in user_examples(word, n)]
        pairs = tokenized(
            parse_examples(json.dumps({"examples": mine}).encode()).items,
            lambda text: list(tokenizer(text)["input_ids"]),
            128,
        )
        last = adapter.revisions[-1]
        weights = blobs.get(adapter.adapter_id, last.weights_sha256)
        last_ref = RevisionRef(
            adapter.adapter_id,
            ref,
            last.number,
            last.weights_sha256,
            len(weights),
            base_fp,
            last.config_json,
        )
        assert scorer.loss(last_ref, weights, pairs) < scorer.loss(None, b"", pairs)
    for client in clients.values():
        client.close()
