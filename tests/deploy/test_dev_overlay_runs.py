"""The `dev` overlay, run rather than read: every MinT workload of the rendered manifests
starts from its container's command, args and environment (tests/deploy/pods.py) against
the local Kafka and S3, passes its readiness probe, and one adapter goes through the
rendered topology: published through the registry, projected, placed, and served by a
Generate through the router, over the TLS the manifests configure; an update request for
it is trained by the trainer into its next revision, published through the registry with
the trainer's token; the evaluator judges that revision on a platform gate set then, and
records its verdict as the platform's principal. Last, the blob collection CronJob runs
once and finds the log and the blobs bucket.

The test plays cert-manager (each `Certificate` becomes the Secret it names, issued by a
test CA) and stands in for the overlay's Kafka and S3 workloads with the local servers.
A wrong bucket, a missing variable, a wrong port or an unmounted file fails here.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import ssl
import sys
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from mint.client import RegistryClient
from mint.models.base import build_base, fingerprint
from mint.rpc.tls import TlsFiles, server_name_options
from mint.v1 import inference_pb2 as pb
from mint.v1 import inference_pb2_grpc
from tests.deploy.manifests import load
from tests.deploy.pods import Doc, LocalCluster
from tests.serving.world import base_config, train
from tests.tls_ca import Authority

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
DEV_TOKEN = "mint-dev-admin"  # the dev overlay's documented admin token
STAND_INS = ("kafka", "s3")  # the overlay's own Kafka and S3 workloads
STAND_IN_ADDRESSES = ("MINT_KAFKA_BOOTSTRAP", "MINT_S3_ENDPOINT")  # what serves in their place
# Names the test makes its own, so that runs never share topics or buckets.
UNIQUE_KEYS = (
    "MINT_EVENTS_TOPIC",
    "MINT_BLOBS_BUCKET",
    "MINT_PROJECTION_BUCKET",
    "MINT_RESIDENCY_TOPICS_PREFIX",
)


def certificates_issued(docs: list[Doc], ca: Authority) -> list[Doc]:
    """What cert-manager would create: for each leaf `Certificate`, its Secret. Each also
    names 127.0.0.1, where the local Services are: the workers dial the registry by its
    Service's address (the static tests check that name is on the certificate)."""
    secrets = []
    for cert in docs:
        if cert.get("kind") != "Certificate" or cert["spec"].get("isCA"):
            continue
        spec = cert["spec"]
        cert_file, key_file = ca.issue(
            spec["commonName"],
            tuple(spec.get("dnsNames", ())),
            ips=("127.0.0.1",),
            usages=tuple(spec["usages"]),
        )
        data = {
            "tls.crt": cert_file.read_bytes(),
            "tls.key": key_file.read_bytes(),
            "ca.crt": ca.ca_file.read_bytes(),
        }
        secrets.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": spec["secretName"]},
                "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
            }
        )
    return secrets


def made_unique(docs: list[Doc], suffix: str) -> None:
    """Topics and buckets of this run only, changed where every service reads them."""
    for doc in docs:
        if doc.get("kind") == "ConfigMap":
            data = doc.get("data") or {}
            for key in UNIQUE_KEYS:
                if key in data:
                    data[key] = f"{data[key]}-{suffix}"


def console_scripts() -> dict[str, list[str]]:
    """Each console script pyproject declares, run the way its installed script would."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    runs = {}
    for name, target in scripts.items():
        module, function = target.split(":")
        code = f"import sys; sys.argv[0] = {name!r}; from {module} import {function}; {function}()"
        runs[name] = [sys.executable, "-c", code]
    return runs


def local_env(home: Path) -> dict[str, str]:
    """What every local pod's environment starts from."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "PYTHONPATH": str(REPO),  # what `pip install` puts on the path in the image
    }


@pytest.fixture
def dev_cluster(
    endpoints: dict[str, str], test_ca: Authority, tmp_path: Path
) -> Iterator[LocalCluster]:
    docs = list(load("dev").objects)
    made_unique(docs, uuid.uuid4().hex[:8])
    docs += certificates_issued(docs, test_ca)
    cluster = LocalCluster(
        docs,
        tmp_path,
        stand_ins=dict(zip(STAND_INS, (endpoints[k] for k in STAND_IN_ADDRESSES), strict=True)),
        stand_in_env={k: endpoints[k] for k in ("MINT_S3_ACCESS_KEY", "MINT_S3_SECRET_KEY")},
    )
    try:
        cluster.start(console_scripts(), local_env(tmp_path), timeout_s=240)
        yield cluster
    finally:
        cluster.stop()


def test_the_dev_overlay_serves_an_adapter_end_to_end(
    dev_cluster: LocalCluster, test_ca: Authority, tmp_path: Path
) -> None:
    trust = TlsFiles(ca_file=test_ca.ca_file)
    registry = RegistryClient(
        dev_cluster.service_address("mint-registry", 50051),
        DEV_TOKEN,
        retry_for_s=60,
        tls=trust,
        server_name="mint-registry",
    )
    base = build_base(base_config(), seed=0)  # what the overlay's nodes serve
    base_fingerprint = fingerprint(base)
    registry.register_base(
        "tiny", base_fingerprint, {k: tuple(v.shape) for k, v in base.state_dict().items()}
    )
    upload = train(tmp_path / "adapter", seed=7)
    registry.create_adapter("acme/deployed", base_fingerprint)
    published = registry.publish_revision("acme/deployed", (upload.config, upload.weights))
    assert published.first_version > 0
    registry.move_channel("acme/deployed", "stable", 1)

    router = grpc.secure_channel(
        dev_cluster.service_address("mint-router", 50060),
        trust.channel_credentials(),
        options=server_name_options("mint-router"),
    )
    stub: Any = inference_pb2_grpc.InferenceStub(router)
    request = pb.GenerateRequest(
        adapters=[pb.AdapterSelector(adapter="acme/deployed", channel="stable")],
        prompt="hello",
        sampling=pb.Sampling(max_new_tokens=4),
    )
    answer = _generate_until_projected(stub, request)
    router.close()
    assert answer.tokens and answer.node == "mint-node-0"  # the StatefulSet's pod
    assert [(a.adapter, a.revision) for a in answer.adapters] == [("acme/deployed", 1)]
    # The registry lists from the projection the router just read it from.
    assert "deployed" in [a.ref.name for a in registry.list_adapters("acme")]
    # The same through the OpenAI-compatible API, over the HTTPS the manifests configure.
    completion = _https_post(
        dev_cluster.service_address("mint-router", 8080),
        "/v1/completions",
        {"model": "acme/deployed@stable", "prompt": "hello", "max_tokens": 4, "temperature": 0},
        test_ca.ca_file,
    )
    assert completion["object"] == "text_completion" and completion["model"].startswith("acme/")

    # The trainer takes an update request from the log and publishes revision 2 through
    # the registry (its token, the registry's Service, the CA it is given).
    examples = [
        {"prompt": "hello ", "completion": "world."},
        {"prompt": "hi ", "completion": "there."},
    ]
    registry.request_update("acme/deployed", examples)
    assert _revisions_when_trained(registry, "acme/deployed") == [1, 2]
    # The evaluator judges the latest revision on a platform gate's suite, and records its
    # verdict through the registry (its platform token, the registry's CA).
    suite = b'{"prompt": "hello ", "continuation": "world."}\n'
    registry.set_gate(
        "acme/deployed", "stable", "smoke", requirement="platform", threshold=-50.0, examples=suite
    )
    assert _platform_verdicts(registry, "acme/deployed", wanted=1) == {(2, "smoke")}
    registry.close()

    # Blob collection, as its CronJob runs it, but a dry run (a real one waits out its
    # 5-minute lease): it reads the log and the blobs bucket, whose blobs are all younger
    # than its grace period.
    status, log = dev_cluster.run_job(
        "mint-gc", console_scripts(), local_env(tmp_path), 120, extra_args=("--dry-run",)
    )
    assert status == 0, log
    summary = re.search(
        r"([\d,]+) blobs, ([\d,]+) events read: .* would delete 0 unreferenced", log
    )
    assert summary, log
    assert all(int(n.replace(",", "")) > 0 for n in summary.groups()), summary.group()


def _https_post(address: str, path: str, body: dict[str, Any], ca_file: Path) -> Any:
    """POST JSON over HTTPS to `address`, checking that the certificate names the
    Service (mint-router), which the local address is not; the answer's JSON body."""
    host, _, port = address.rpartition(":")
    data = json.dumps(body).encode()
    request = (
        f"POST {path} HTTP/1.0\r\nHost: mint-router\r\nAuthorization: Bearer {DEV_TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    ).encode() + data
    context = ssl.create_default_context(cafile=str(ca_file))
    with (
        socket.create_connection((host, int(port)), timeout=60) as raw,
        context.wrap_socket(raw, server_hostname="mint-router") as tls,
    ):
        tls.sendall(request)
        answer = b"".join(iter(lambda: tls.recv(65536), b""))
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), answer[:500]
    return json.loads(payload)


def _revisions_when_trained(registry: RegistryClient, ref: str) -> list[int]:
    """The adapter's revisions once a second one appears (or as they are after 120 s)."""
    deadline = time.monotonic() + 120
    while True:
        numbers = [r.number for r in registry.get_adapter(ref).revisions]
        if len(numbers) > 1 or time.monotonic() > deadline:
            return numbers
        time.sleep(0.5)


def _platform_verdicts(registry: RegistryClient, ref: str, wanted: int) -> set[tuple[int, str]]:
    """(revision, suite) of the platform's verdicts once there are `wanted` (or after 120 s)."""
    deadline = time.monotonic() + 120
    while True:
        adapter = registry.get_adapter(ref)
        verdicts = {
            (r.number, e.suite) for r in adapter.revisions for e in r.evaluations if e.platform
        }
        if len(verdicts) >= wanted or time.monotonic() > deadline:
            return verdicts
        time.sleep(0.5)


def _generate_until_projected(stub: Any, request: pb.GenerateRequest) -> Any:
    """The projection lags the registry by a moment: NOT_FOUND until it lands."""
    deadline = time.monotonic() + 90
    metadata = (("authorization", f"Bearer {DEV_TOKEN}"),)
    while True:
        try:
            return stub.Generate(request, timeout=60, metadata=metadata)
        except grpc.RpcError as exc:
            retryable = {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE}
            if exc.code() not in retryable or time.monotonic() > deadline:
                raise
            time.sleep(1)
