"""The settings models: each service requires exactly what it uses, a flag wins over a
variable and a variable over a secret file, and every mistake says how to fix it."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from mint import settings
from mint.audit.settings import AuditSettings, AuditVerifySettings
from mint.rpc.tls import TlsFiles
from mint.settings import MintSettings, ProcessOptions
from services.controller.settings import ControllerSettings
from services.inference.settings import NodeSettings
from services.registry.settings import EmbeddedRegistrySettings, RegistrySettings
from services.router.settings import RouterSettings
from streams.evaluator.settings import EvaluatorSettings
from streams.projector.settings import ProjectorRunSettings, ProjectorSettings
from streams.trainer.settings import TrainerSettings

KAFKA = {"kafka_bootstrap"}
S3 = {"s3_endpoint", "s3_access_key", "s3_secret_key"}
REQUIRED: dict[type[MintSettings], set[str]] = {
    ControllerSettings: KAFKA,
    RegistrySettings: KAFKA | S3 | {"tokens_file", "kek_file"},
    EmbeddedRegistrySettings: {"tokens_file"},
    ProjectorSettings: KAFKA | S3 | {"kek_file"},
    ProjectorRunSettings: KAFKA | S3 | {"kek_file"},
    RouterSettings: KAFKA | S3 | {"tokens_file"},
    NodeSettings: KAFKA | S3 | {"tokens_file", "name"},
    AuditSettings: KAFKA,
    AuditVerifySettings: KAFKA | S3 | {"kek_file"},
    EvaluatorSettings: KAFKA | S3 | {"kek_file", "evaluator_token"},
    TrainerSettings: KAFKA | S3 | {"kek_file", "registry", "registry_token"},
}
# What README's Settings say every process takes.
PROCESS_FLAGS = [
    *["--log-level", "DEBUG", "--log-format", "json", "--startup-timeout-s", "3"],
    *["--library-log-level", "INFO", "--logger-levels", "kafka=DEBUG", "--otel"],
]


@pytest.fixture(autouse=True)
def no_mint_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what each test sets: `make test` exports the stack's MINT_* variables."""
    for name in [n for n in os.environ if n.startswith("MINT_")]:
        monkeypatch.delenv(name)


def load(model: type[settings.S], *flags: str) -> settings.S:
    parser = argparse.ArgumentParser()
    settings.add_flags(parser, model)
    return settings.load(model, parser.parse_args(list(flags)))


def failure(model: type[MintSettings], *flags: str) -> list[str]:
    with pytest.raises(SystemExit) as stopped:
        load(model, *flags)
    assert isinstance(stopped.value.code, str), "a message, which Python prints, exit 1"
    return stopped.value.code.splitlines()


@pytest.mark.parametrize("model", list(REQUIRED), ids=lambda m: m.__name__)
def test_each_service_asks_for_what_it_needs_by_flag_and_variable(
    model: type[MintSettings],
) -> None:
    wanted = {
        f"missing {name}: pass --{name.replace('_', '-')} or set MINT_{name.upper()}"
        for name in REQUIRED[model]
    }
    assert set(failure(model)) == wanted


@pytest.mark.parametrize("model", list(REQUIRED), ids=lambda m: m.__name__)
def test_every_process_takes_the_logging_and_start_up_settings(
    model: type[MintSettings],
) -> None:
    assert issubclass(model, ProcessOptions)
    parser = argparse.ArgumentParser()
    settings.add_flags(parser, model)
    args = parser.parse_args(PROCESS_FLAGS)  # SystemExit: unrecognized arguments
    assert (args.log_level, args.log_format, args.otel) == ("DEBUG", "json", True)


def test_the_controller_starts_with_kafka_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINT_KAFKA_BOOTSTRAP", "kafka-0:9092")
    config = load(ControllerSettings)
    assert config.kafka().options() == {
        "bootstrap_servers": "kafka-0:9092",
        "security_protocol": "PLAINTEXT",
    }
    assert config.residency_topics().prefix == "mint.residency"


def test_writers_and_readers_of_the_projection_share_one_default_bucket() -> None:
    def default(model: type[MintSettings], name: str) -> object:
        return model.model_fields[name].default

    for name in ("projection_bucket", "projection_prefix"):
        assert default(ProjectorSettings, name) == default(RouterSettings, name)
        assert default(ProjectorSettings, name) == default(NodeSettings, name)
        assert default(ProjectorSettings, name) == default(RegistrySettings, name)
    assert default(RegistrySettings, "blobs_bucket") == default(ProjectorSettings, "blobs_bucket")
    assert default(RegistrySettings, "events_topic") == default(ProjectorSettings, "events_topic")
    ports: dict[tuple[type[MintSettings], str], int] = {
        (RegistrySettings, "port"): 50051,
        (RouterSettings, "port"): 50060,
        (NodeSettings, "port"): 50061,
        (ProjectorRunSettings, "metrics_port"): 9464,
        (RouterSettings, "metrics_port"): 9465,
        (NodeSettings, "metrics_port"): 9466,
        (ControllerSettings, "metrics_port"): 9467,
        (RegistrySettings, "metrics_port"): 9468,
    }
    assert {key: default(*key) for key in ports} == ports


def test_a_flag_wins_over_a_variable_and_a_variable_over_a_secret_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MINT_KAFKA_BOOTSTRAP", "k:9092")
    (tmp_path / "MINT_GROUP").write_text("from-file\n")  # as a mounted Secret: a newline
    secrets = ("--secrets-dir", str(tmp_path))
    assert load(ControllerSettings).group == "mint-controller"
    assert load(ControllerSettings, *secrets).group == "from-file"
    monkeypatch.setenv("MINT_GROUP", "from-variable")
    assert load(ControllerSettings, *secrets).group == "from-variable"
    assert load(ControllerSettings, *secrets, "--group", "from-flag").group == "from-flag"


def test_the_secrets_directory_comes_from_its_variable_too(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "MINT_KAFKA_BOOTSTRAP").write_text("k:9092")
    (tmp_path / "MINT_KAFKA_SASL_PASSWORD").write_text("s3cret\n")
    monkeypatch.setenv("MINT_SECRETS_DIR", str(tmp_path))
    config = load(
        ControllerSettings,
        *("--kafka-security-protocol", "SASL_PLAINTEXT", "--kafka-sasl-mechanism", "PLAIN"),
        *("--kafka-sasl-username", "mint"),
    )
    assert config.kafka().sasl_plain_password == "s3cret"
    assert "s3cret" not in repr(config) and "s3cret" not in repr(config.kafka())
    monkeypatch.setenv("MINT_SECRETS_DIR", str(tmp_path / "absent"))
    assert failure(ControllerSettings) == [
        f"secrets directory {tmp_path / 'absent'} does not exist: fix --secrets-dir or "
        "MINT_SECRETS_DIR"
    ]


def test_bad_values_name_the_setting_and_where_it_came_from() -> None:
    assert failure(AuditSettings, "--kafka-bootstrap", "k", "--events-partitions", "0") == [
        "bad events_partitions (Input should be greater than 0): "
        "fix --events-partitions or MINT_EVENTS_PARTITIONS"
    ]
    (problem,) = failure(AuditSettings, "--kafka-bootstrap", "k", "--kafka-ssl-cafile", "/no")
    assert problem.startswith("bad kafka_ssl_cafile (Path does not point to a file)")


def test_kafka_security_settings_become_kafka_pythons_options(tmp_path: Path) -> None:
    """The settings only: a real SASL broker takes them in tests/infra/test_kafka_security.py."""
    ca, cert, key = (tmp_path / name for name in ("ca.pem", "cert.pem", "key.pem"))
    for path in (ca, cert, key):
        path.write_text("pem")
    flags = ["--kafka-bootstrap", "b1:9093,b2:9093", "--kafka-security-protocol", "SASL_SSL"]
    flags += ["--kafka-ssl-cafile", str(ca), "--kafka-ssl-certfile", str(cert)]
    flags += ["--kafka-ssl-keyfile", str(key), "--kafka-sasl-mechanism", "SCRAM-SHA-512"]
    flags += ["--kafka-sasl-username", "registry", "--kafka-sasl-password", "pw"]
    options = load(ControllerSettings, *flags).kafka().options()
    assert options == {
        "bootstrap_servers": "b1:9093,b2:9093",
        "security_protocol": "SASL_SSL",
        "ssl_cafile": str(ca),
        "ssl_certfile": str(cert),
        "ssl_keyfile": str(key),
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "registry",
        "sasl_plain_password": "pw",
    }
    for client in (KafkaConsumer, KafkaProducer, KafkaAdminClient):
        assert set(options) <= set(client.DEFAULT_CONFIG), client  # its names, all of them


def test_incomplete_kafka_security_is_refused_with_what_to_add(tmp_path: Path) -> None:
    kafka = ("--kafka-bootstrap", "k:9092")
    assert failure(ControllerSettings, *kafka, "--kafka-security-protocol", "SASL_SSL") == [
        "kafka_security_protocol SASL_SSL needs kafka_sasl_mechanism, kafka_sasl_username, "
        "kafka_sasl_password: pass --kafka-sasl-mechanism or MINT_KAFKA_SASL_MECHANISM; "
        "pass --kafka-sasl-username or MINT_KAFKA_SASL_USERNAME; "
        "pass --kafka-sasl-password or MINT_KAFKA_SASL_PASSWORD"
    ]
    assert failure(ControllerSettings, *kafka, "--kafka-sasl-username", "u") == [
        "kafka_sasl_username given, but kafka_security_protocol is PLAINTEXT: set "
        "--kafka-security-protocol or MINT_KAFKA_SECURITY_PROTOCOL to SASL_PLAINTEXT or "
        "SASL_SSL, or drop them"
    ]
    cert = tmp_path / "cert.pem"
    cert.write_text("pem")
    ssl = ("--kafka-security-protocol", "SSL", "--kafka-ssl-certfile", str(cert))
    assert failure(ControllerSettings, *kafka, *ssl) == [
        "kafka_ssl_certfile and kafka_ssl_keyfile go together: also pass "
        "--kafka-ssl-keyfile or MINT_KAFKA_SSL_KEYFILE"
    ]


def test_s3_https_and_its_ca_settings(tmp_path: Path) -> None:
    """The settings only: a real HTTPS round trip is tests/infra/test_s3_tls.py."""
    ca = tmp_path / "ca.pem"
    ca.write_text("pem")
    s3 = ["--s3-endpoint", "s3:443", "--s3-access-key", "a", "--s3-secret-key", "s"]
    s3 += ["--kek-file", str(ca)]  # any file will do here
    config = load(AuditVerifySettings, "--kafka-bootstrap", "k", *s3, "--s3-secure")
    assert config.s3().secure and config.s3().ca_file is None
    config = load(
        AuditVerifySettings, "--kafka-bootstrap", "k", *s3, "--s3-secure", "--s3-ca-file", str(ca)
    )
    assert config.s3().ca_file == str(ca)
    assert failure(AuditVerifySettings, "--kafka-bootstrap", "k", *s3, "--s3-ca-file", str(ca)) == [
        "s3_ca_file is set but S3 is plain HTTP: also pass --s3-secure or set "
        "MINT_S3_SECURE=true (or drop --s3-ca-file or MINT_S3_CA_FILE)"
    ]


@pytest.mark.parametrize(
    "endpoint", ["s3:9000", "s3.example.com", "10.0.0.7:9000", "[::1]:9000", "s3:9000/"]
)
def test_an_s3_endpoint_is_host_port(endpoint: str) -> None:
    s3 = ["--s3-endpoint", endpoint, "--s3-access-key", "a", "--s3-secret-key", "s"]
    assert load(ProjectorSettings, "--kafka-bootstrap", "k", *s3, "--kek-file", __file__)


@pytest.mark.parametrize(
    "endpoint",
    ["http://s3:9000", "https://s3.example.com", "s3:9000/bucket", "s3:99999", "key@s3:9000", ""],
)
def test_an_s3_endpoint_with_a_scheme_or_path_says_to_give_host_port(endpoint: str) -> None:
    s3 = ["--s3-endpoint", endpoint, "--s3-access-key", "a", "--s3-secret-key", "s"]
    (problem,) = failure(ProjectorSettings, "--kafka-bootstrap", "k", *s3, "--kek-file", __file__)
    assert problem == (
        f"bad s3_endpoint ({endpoint!r} is not host:port; give the server's host and port "
        "alone, without http:// or a path (for HTTPS also pass --s3-secure)): fix "
        "--s3-endpoint or MINT_S3_ENDPOINT"
    )


def test_tls_files_for_the_servers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = {}
    for name in ("cert", "key", "ca"):
        files[name] = tmp_path / f"{name}.pem"
        files[name].write_text("pem")
    monkeypatch.setenv("MINT_TOKENS_FILE", str(files["ca"]))  # any file will do here
    assert load(EmbeddedRegistrySettings).tls_files() is None
    tls = ("--tls-cert-file", str(files["cert"]), "--tls-key-file", str(files["key"]))
    mutual = (*tls, "--tls-ca-file", str(files["ca"]), "--tls-require-client-cert")
    assert load(EmbeddedRegistrySettings, *mutual).tls_files() == TlsFiles(
        files["cert"], files["key"], files["ca"], require_client_cert=True
    )
    assert failure(EmbeddedRegistrySettings, *tls, "--tls-require-client-cert") == [
        "tls_require_client_cert needs tls_ca_file: pass --tls-ca-file or MINT_TLS_CA_FILE"
    ]
    assert failure(EmbeddedRegistrySettings, "--tls-key-file", str(files["key"])) == [
        "tls_cert_file and tls_key_file go together: also pass "
        "--tls-cert-file or MINT_TLS_CERT_FILE"
    ]


def test_the_router_needs_a_token_or_a_certificate_toward_the_nodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pem = tmp_path / "any.pem"
    pem.write_text("pem")
    for name, value in {
        "MINT_KAFKA_BOOTSTRAP": "127.0.0.1:9092",
        "MINT_S3_ENDPOINT": "127.0.0.1:9000",
        "MINT_S3_ACCESS_KEY": "k",
        "MINT_S3_SECRET_KEY": "s",
        "MINT_TOKENS_FILE": str(pem),
    }.items():
        monkeypatch.setenv(name, value)
    (message,) = failure(RouterSettings)
    assert message.startswith("the router needs a credential toward the nodes")
    assert "--service-token or MINT_SERVICE_TOKEN" in message
    assert load(RouterSettings, "--service-token", "t").service_token is not None
    mtls = ("--tls-cert-file", str(pem), "--tls-key-file", str(pem))
    (message,) = failure(RouterSettings, *mtls)  # it checks the nodes' certificates too
    assert message.endswith("pass --tls-ca-file or MINT_TLS_CA_FILE")
    assert load(RouterSettings, *mtls, "--tls-ca-file", str(pem)).service_token is None


def test_a_node_takes_its_device_dtype_and_a_host_budget_no_smaller_than_the_slots(
    tmp_path: Path,
) -> None:
    tokens = tmp_path / "tokens.json"
    tokens.write_text("{}")
    node = ["--kafka-bootstrap", "k", "--s3-endpoint", "s", "--s3-access-key", "a"]
    node += ["--s3-secret-key", "s", "--tokens-file", str(tokens), "--name", "n1"]
    config = load(NodeSettings, *node)
    assert (config.device, config.dtype, config.host_budget_mib) == ("auto", "auto", 1024)
    config = load(NodeSettings, *node, "--device", "cuda:1", "--dtype", "bfloat16")
    assert (config.device, config.dtype) == ("cuda:1", "bfloat16")
    (problem,) = failure(NodeSettings, *node, "--device", "gpu")
    assert problem.startswith("bad device (String should match pattern")
    assert problem.endswith("fix --device or MINT_DEVICE")
    (problem,) = failure(NodeSettings, *node, "--dtype", "int8")
    assert problem.startswith("bad dtype (Input should be 'auto', 'float32', 'bfloat16' or")
    classes = load(NodeSettings, *node, "--max-rank", "48", "--slots", "9").slot_layout()
    assert [(c.rank, c.slots) for c in classes.classes] == [
        (r, 8) for r in (1, 2, 4, 8, 16, 32, 48)
    ]
    mixed = load(NodeSettings, *node, "--rank-classes", "32,8:96").slot_layout()
    assert [(c.rank, c.slots) for c in mixed.classes] == [(8, 96), (32, 63)]
    (problem,) = failure(NodeSettings, *node, "--rank-classes", "8,16")
    assert problem.startswith("the largest rank class (16) must be the largest rank served (32)")
    assert problem.endswith("fix --rank-classes (MINT_RANK_CLASSES)")
    assert load(NodeSettings, *node, "--lora-kernel", "torch").lora_kernel == "torch"
    (problem,) = failure(NodeSettings, *node, "--lora-kernel", "triton")
    assert problem.startswith("bad lora_kernel (Input should be 'auto' or 'torch'")
    (problem,) = failure(NodeSettings, *node, "--rank-classes", "8:lots")
    assert "such as '8,16,32' or '8:96,32:16'" in problem
    assert failure(NodeSettings, *node, "--budget-mib", "512", "--host-budget-mib", "256") == [
        "host_budget_mib (256) is below budget_mib (512): every adapter in a device slot is "
        "also held in host memory, so raise --host-budget-mib (MINT_HOST_BUDGET_MIB) or "
        "lower --budget-mib (MINT_BUDGET_MIB)"
    ]


@pytest.mark.parametrize("registry", ["garbage", "http://registry:50051", "r:1,", ""])
def test_the_registry_a_stream_processor_calls_is_host_port(registry: str) -> None:
    """Else it would retry a name that can never answer, as if the registry were down."""
    s3 = ["--s3-endpoint", "s3:9000", "--s3-access-key", "a", "--s3-secret-key", "s"]
    common = ["--kafka-bootstrap", "k", *s3, "--kek-file", __file__, "--registry", registry]
    (problem,) = failure(EvaluatorSettings, *common, "--evaluator-token", "t")
    assert problem.startswith(f"bad registry ({registry!r} is not host:port[,host:port...]")
    (problem,) = failure(TrainerSettings, *common, "--registry-token", "t")
    assert "is not host:port[,host:port...]" in problem
    good = [*common[:-1], "r1:50051,r2:50051"]
    assert load(EvaluatorSettings, *good, "--evaluator-token", "t").registry == "r1:50051,r2:50051"
