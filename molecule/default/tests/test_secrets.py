"""Secrets and PKI: kept on the controller with mode 0600, never in the repository; certificates
issued again when missing or ending."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta

from celerylab import (
    ALL_FLOWERS,
    BROKERS,
    INVENTORY,
    PKI,
    PROJECT,
    SECRETS,
    WORKERS,
    host,
    run_playbook,
    secrets,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec


def test_secrets_are_kept_on_the_controller_with_mode_0600() -> None:
    for path in [*SECRETS.iterdir(), *SECRETS.glob("apps/*/*"), *PKI.glob("*.key")]:
        if path.is_file():
            assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
    # pki/, and apps/ID/ of each app's passwords where there is an app after the first.
    for directory in [PKI, *SECRETS.glob("apps/*")]:
        assert directory.stat().st_mode & 0o077 == 0, f"{directory} is open to others"
    # On the hosts, each private key is readable by root and its service's group only.
    keys = [(b, "/etc/rabbitmq/tls/server.key", "rabbitmq") for b in BROKERS]
    keys += [(f, "/etc/flower/tls/flower.key", "flower") for f in ALL_FLOWERS]
    for name, key, group in keys:
        f = host(name).file(key)
        assert (f.user, f.group, f.mode) == ("root", group, 0o640), f"{name}:{key}"


def short_lived_copy(name: str, days: int) -> bytes:
    """The host's certificate made again by the cluster's CA (same key, names and usages),
    ending in DAYS days."""
    old = x509.load_pem_x509_certificate((PKI / f"{name}.crt").read_bytes())
    ca = x509.load_pem_x509_certificate((PKI / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((PKI / "ca.key").read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    start = datetime.now(UTC) - timedelta(days=1)
    builder = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(ca.subject)
        .public_key(old.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days + 1))
    )
    for extension in old.extensions:
        builder = builder.add_extension(extension.value, extension.critical)
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def test_certificates_are_issued_again_when_missing_or_ending_and_kept_when_current() -> None:
    """site.yml --tags pki on the converged cluster: a host certificate removed from the
    controller is issued again, one that ends within pki_cert_renew_days (30) is renewed, both
    by the cluster's CA for the host's own key and names, and a current one is left as it is
    (same bytes). The first files are put back afterwards, so the hosts' copies still match."""
    removed, ending, current = WORKERS[0], WORKERS[1], BROKERS[0]
    originals = {n: (PKI / f"{n}.crt").read_bytes() for n in (removed, ending, current)}
    ca = x509.load_pem_x509_certificate((PKI / "ca.crt").read_bytes())
    try:
        (PKI / f"{removed}.crt").unlink()
        (PKI / f"{ending}.crt").write_bytes(short_lived_copy(ending, days=5))
        run_playbook("site.yml", "-i", INVENTORY, "--tags", "pki")
        assert (PKI / f"{current}.crt").read_bytes() == originals[current], f"{current}'s was issued again"
        for name in (removed, ending):
            new = x509.load_pem_x509_certificate((PKI / f"{name}.crt").read_bytes())
            old = x509.load_pem_x509_certificate(originals[name])
            left = new.not_valid_after_utc - datetime.now(UTC)
            assert left > timedelta(days=300), f"{name}'s certificate ends in {left}"
            assert new.public_key() == old.public_key(), f"{name}'s certificate is not for its key"
            assert new.extensions.get_extension_for_class(x509.SubjectAlternativeName) == (
                old.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            ), f"{name}'s certificate has other names"
            ca_public = ca.public_key()
            assert isinstance(ca_public, ec.EllipticCurvePublicKey)
            assert new.signature_hash_algorithm is not None
            # Raises InvalidSignature unless the cluster's CA signed it.
            ca_public.verify(new.signature, new.tbs_certificate_bytes, ec.ECDSA(new.signature_hash_algorithm))
    finally:
        for name, data in originals.items():
            (PKI / f"{name}.crt").write_bytes(data)


def test_no_secret_is_in_the_repository() -> None:
    """Generated secrets land in .secrets/ beside the inventory, which git ignores; no tracked
    file holds a secret of this run."""

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", "-C", str(PROJECT), *args], capture_output=True, text=True)

    tracked = git("ls-files")
    assert tracked.returncode == 0 and tracked.stdout, tracked.stderr
    assert not [p for p in tracked.stdout.splitlines() if ".secrets/" in f"/{p}"]
    for inventory in ["inventory", "molecule/default", "somewhere/else"]:
        ignored = git("check-ignore", "--no-index", "-q", f"{inventory}/.secrets/rabbitmq_app_password")
        assert ignored.returncode == 0, f"{inventory}/.secrets/ is not covered by .gitignore"
    for secret in secrets():
        assert git("grep", "-q", "-F", "-e", secret).returncode == 1, "a tracked file holds a secret"
