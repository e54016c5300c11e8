"""Certificates and keys of a test cluster: a CA, the API server's serving certificate,
client certificates for the admin and the controller manager, and the service-account key
pair that signs and verifies ServiceAccount tokens.

Keys are ECDSA P-256, which is quick to generate; everything is valid for one day.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, as PEM files."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class ClusterPKI:
    """Every PEM file a test cluster needs."""

    ca: KeyPair
    apiserver: KeyPair
    admin: KeyPair
    controller_manager: KeyPair
    controller_manager_serving: KeyPair
    service_account_key: Path
    service_account_public_key: Path


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _builder(subject: x509.Name, issuer: x509.Name, public_key) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
    )


def _issue_ca(directory: Path) -> tuple[KeyPair, ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _new_key()
    name = _name("modelconv-testenv-ca")
    cert = (
        _builder(name, name, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    pair = KeyPair(directory / "ca.crt", directory / "ca.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, pair.key)
    return pair, key, cert


def _issue_leaf(
    directory: Path,
    stem: str,
    subject: x509.Name,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    *,
    server_names: list[str] | None = None,
) -> KeyPair:
    """Issue a client certificate, or a serving certificate when `server_names` is given."""
    key = _new_key()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server_names else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        _builder(subject, ca_cert.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if server_names:
        alternatives: list[x509.GeneralName] = []
        for name in server_names:
            try:
                alternatives.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alternatives.append(x509.DNSName(name))
        builder = builder.add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    pair = KeyPair(directory / f"{stem}.crt", directory / f"{stem}.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, pair.key)
    return pair


def issue_cluster_pki(directory: Path) -> ClusterPKI:
    """Write a fresh CA, server and client certificates and the service-account keys."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key, ca_cert = _issue_ca(directory)
    apiserver = _issue_leaf(
        directory, "apiserver", _name("kube-apiserver"), ca_key, ca_cert,
        server_names=[
            "127.0.0.1", "::1", "localhost", "kubernetes", "kubernetes.default",
            "kubernetes.default.svc", "kubernetes.default.svc.cluster.local",
        ],
    )
    # The API server authorizes the group system:masters for everything, whatever RBAC grants.
    admin = _issue_leaf(directory, "admin", _name("testenv-admin", "system:masters"),
                        ca_key, ca_cert)
    # The bootstrap RBAC policy binds this user name to the controller manager's role.
    controller_manager = _issue_leaf(
        directory, "controller-manager", _name("system:kube-controller-manager"), ca_key, ca_cert
    )

    controller_manager_serving = _issue_leaf(
        directory, "controller-manager-serving", _name("kube-controller-manager"), ca_key, ca_cert,
        server_names=["127.0.0.1", "localhost"],
    )

    signing_key = _new_key()
    service_account_key = directory / "service-account.key"
    service_account_public_key = directory / "service-account.pub"
    _write_key(signing_key, service_account_key)
    service_account_public_key.write_bytes(
        signing_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return ClusterPKI(ca, apiserver, admin, controller_manager, controller_manager_serving,
                      service_account_key, service_account_public_key)
