"""The pki role's filter (roles/pki/filter_plugins/pki_certificates.py), against keys and
certificates made here the way the role makes them (ECC P-256, issued by an own CA)."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from file_module import load

plugin = load("roles/pki/filter_plugins/pki_certificates.py")

NOW = datetime.datetime.now(datetime.UTC)
NAMES = ["DNS:cbroker1", "DNS:cbroker1.lab.example", "IP:10.20.0.11"]


def cn(name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])


def pem_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


def make_ca(path: Path, name: str = "Celery cluster CA") -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(cn(name))
        .issuer_name(cn(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key


def issue(
    tmp: Path,
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    names: list[str] = NAMES,
    days: int = 397,
    common_name: str = "cbroker1",
    ca_name: str = "Celery cluster CA",
) -> None:
    """host.key and host.crt in TMP, issued by CA_KEY."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem_key(tmp / "host.key", key)
    alt = [
        x509.IPAddress(ipaddress.ip_address(n[3:])) if n.startswith("IP:") else x509.DNSName(n[4:])
        for n in names
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(cn(common_name))
        .issuer_name(cn(ca_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    (tmp / "host.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def problems(tmp: Path, names: list[str] = NAMES) -> list[str]:
    result: list[str] = plugin.pki_cert_problems(
        str(tmp / "host.crt"), str(tmp / "host.key"), str(tmp / "ca.crt"), "cbroker1", names, "30"
    )
    return result


def test_a_current_certificate_needs_nothing(tmp_path: Path) -> None:
    issue(tmp_path, make_ca(tmp_path / "ca.crt"))
    assert problems(tmp_path) == []
    assert problems(tmp_path, [*reversed(NAMES), "DNS:cbroker1"]) == []


def test_missing_files(tmp_path: Path) -> None:
    assert problems(tmp_path) == ["missing"]
    issue(tmp_path, make_ca(tmp_path / "ca.crt"))
    (tmp_path / "host.key").unlink()
    assert problems(tmp_path) == ["missing"]
    (tmp_path / "host.crt").write_text("not a certificate")
    assert problems(tmp_path) == ["missing"]


def test_a_certificate_for_another_key(tmp_path: Path) -> None:
    issue(tmp_path, make_ca(tmp_path / "ca.crt"))
    pem_key(tmp_path / "host.key", ec.generate_private_key(ec.SECP256R1()))
    assert problems(tmp_path) == ["key"]


def test_names_must_be_exactly_the_wanted_ones(tmp_path: Path) -> None:
    issue(tmp_path, make_ca(tmp_path / "ca.crt"))
    assert problems(tmp_path, [*NAMES, "DNS:broker.example"]) == ["names"]
    assert problems(tmp_path, NAMES[:2]) == ["names"]
    issue(tmp_path, make_ca(tmp_path / "ca.crt"), names=["DNS:cbroker1", "IP:fd00:0:0::1"])
    assert problems(tmp_path, ["IP:fd00::1", "DNS:cbroker1"]) == []


def test_another_subject(tmp_path: Path) -> None:
    issue(tmp_path, make_ca(tmp_path / "ca.crt"), common_name="cworker1")
    assert problems(tmp_path) == ["subject"]


def test_a_certificate_of_another_ca_even_of_the_same_name(tmp_path: Path) -> None:
    issue(tmp_path, make_ca(tmp_path / "old-ca.crt"))
    make_ca(tmp_path / "ca.crt")
    assert problems(tmp_path) == ["issuer"]


def test_a_certificate_that_ends_within_the_renewal_days(tmp_path: Path) -> None:
    ca_key = make_ca(tmp_path / "ca.crt")
    issue(tmp_path, ca_key, days=29)
    assert problems(tmp_path) == ["renew"]
    issue(tmp_path, ca_key, days=32)
    assert problems(tmp_path) == []
