"""Filters of the pki role: what, if anything, makes a host's key and certificate need work.

Read on the controller from the files, with no module run: on a cluster that has run, every
host's files are current and host.yml's three module runs per host are skipped.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

# What pki_cert_problems may name.
PROBLEMS = ("missing", "key", "issuer", "subject", "names", "renew")


def _name(entry: str) -> str:
    """An alternative name as "DNS:name" or "IP:address" (the address in its compressed form)."""
    kind, _, value = entry.partition(":")
    try:
        return f"IP:{ipaddress.ip_address(value)}" if kind == "IP" else entry
    except ValueError:
        return entry


def _alt_names(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [f"DNS:{n}" for n in ext.get_values_for_type(x509.DNSName)] + [
        f"IP:{a}" for a in ext.get_values_for_type(x509.IPAddress)
    ]


def _key_id(cert: x509.Certificate, kind: Any) -> bytes | None:
    try:
        value = cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
    return value.key_identifier if kind is x509.AuthorityKeyIdentifier else value.digest


def pki_cert_problems(
    cert_path: str, key_path: str, ca_path: str, common_name: str, names: list[str], renew_days: Any
) -> list[str]:
    """What makes the certificate CERT_PATH for the key KEY_PATH need work, as words of
    PROBLEMS: "missing" (a file is not there or cannot be read; nothing else is said when it is
    the certificate), "key" (the certificate is not for that key), "issuer" (not issued by the
    CA certificate CA_PATH), "subject" (not CN=COMMON_NAME alone), "names" (its alternative
    names are not exactly NAMES, "DNS:name" or "IP:address"), "renew" (it ends within
    RENEW_DAYS days). Empty: nothing to do."""
    try:
        cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    except (OSError, ValueError):
        return ["missing"]
    problems = []
    try:
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
        ca = x509.load_pem_x509_certificate(Path(ca_path).read_bytes())
    except (OSError, ValueError, TypeError):
        problems.append("missing")
    else:
        public = serialization.PublicFormat.SubjectPublicKeyInfo
        der = serialization.Encoding.DER
        if cert.public_key().public_bytes(der, public) != key.public_key().public_bytes(der, public):
            problems.append("key")
        ca_key_id = _key_id(ca, x509.SubjectKeyIdentifier)
        if (
            cert.issuer != ca.subject
            or ca_key_id is None
            or _key_id(cert, x509.AuthorityKeyIdentifier) != ca_key_id
        ):
            problems.append("issuer")
    if cert.subject != x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]):
        problems.append("subject")
    if sorted(_alt_names(cert)) != sorted({_name(n) for n in names}):
        problems.append("names")
    utc = datetime.UTC
    # not_valid_after_utc came with cryptography 42; the controller may have an older one.
    ends = getattr(cert, "not_valid_after_utc", None) or cert.not_valid_after.replace(tzinfo=utc)
    left = ends - datetime.datetime.now(utc)
    if left.days < int(renew_days):
        problems.append("renew")
    return problems


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"pki_cert_problems": pki_cert_problems}
