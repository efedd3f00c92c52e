"""A server's TLS files are checked at start-up (`TlsFiles.check`, `startup.require_tls`):
a file that is not PEM of its kind, or a key that is not the certificate's, is named with
the setting to fix, rather than reported by gRPC as a port it cannot bind."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mint import startup
from mint.rpc.tls import BadTlsFile, TlsFiles
from tests.tls_ca import Authority, authority


@pytest.fixture
def ca(tmp_path: Path) -> Authority:
    return authority("t", tmp_path)


def problem(files: TlsFiles) -> tuple[str, str]:
    """(setting to fix, message) of the check's failure."""
    with pytest.raises(BadTlsFile) as bad:
        files.check()
    return bad.value.setting, str(bad.value)


def test_a_certificate_its_key_and_a_ca_pass(ca: Authority, tmp_path: Path) -> None:
    cert, key = ca.issue("mint-node")
    TlsFiles(cert, key, ca.ca_file, require_client_cert=True).check()
    both = tmp_path / "both.pem"  # one file holding both, as gRPC also takes it
    both.write_bytes(cert.read_bytes() + key.read_bytes())
    TlsFiles(both, both).check()
    startup.require_tls(None)  # plaintext: nothing to check


def test_files_that_are_not_pem_name_the_setting(ca: Authority, tmp_path: Path) -> None:
    cert, key = ca.issue("mint-node")
    garbage, empty = tmp_path / "garbage.pem", tmp_path / "empty.pem"
    garbage.write_text("garbage\n")
    empty.write_text("")
    setting, message = problem(TlsFiles(garbage, key))
    assert setting == "tls_cert_file"
    assert (
        message
        == f"tls_cert_file {garbage} is not a valid PEM certificate (-----BEGIN CERTIFICATE-----)"
    )
    setting, message = problem(TlsFiles(cert, empty))
    assert setting == "tls_key_file" and message.endswith(
        "private key (-----BEGIN PRIVATE KEY-----): the file is empty"
    )
    setting, message = problem(TlsFiles(cert, key, garbage))
    assert setting == "tls_ca_file" and "is not a valid PEM certificate" in message
    setting, message = problem(TlsFiles(key, cert))  # swapped
    assert setting == "tls_cert_file" and message.endswith(
        ": it holds a private key (are the two files swapped?)"
    )


def test_a_key_not_the_certificates_is_named(ca: Authority) -> None:
    cert, _ = ca.issue("mint-node")
    _, other_key = ca.issue("mint-router")
    setting, message = problem(TlsFiles(cert, other_key))
    assert setting == "tls_key_file"
    assert message.startswith(f"tls_key_file {other_key} and tls_cert_file {cert} do not match")


def test_an_encrypted_key_is_named(ca: Authority, tmp_path: Path) -> None:
    cert, _ = ca.issue("mint-node")
    locked = tmp_path / "locked.key"
    locked.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    setting, message = problem(TlsFiles(cert, locked))
    assert setting == "tls_key_file" and "is an encrypted private key" in message


def test_the_start_up_check_is_one_line_saying_what_to_pass(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("garbage\n")
    with pytest.raises(SystemExit) as stopped:
        startup.require_tls(TlsFiles(garbage, garbage))
    assert stopped.value.code == (
        f"tls_cert_file {garbage} is not a valid PEM certificate (-----BEGIN CERTIFICATE-----); "
        "fix --tls-cert-file or MINT_TLS_CERT_FILE"
    )
