#!/usr/bin/env python3
"""Generate the TLS certificates and SuperNode authentication keys of a Flower 1.42
deployment (one SuperLink, N SuperNodes), with the ``cryptography`` package only.

Usage::

    python docker/make_certs.py                       # -> docker/deploy/, 3 SuperNodes
    python docker/make_certs.py --out /tmp/dep --supernodes 3 --hostname superlink
    python docker/make_certs.py --force               # overwrite an existing folder

Output folder layout (``--out``, default ``docker/deploy/``, ignored by git)::

    <out>/
      certs/
        ca.crt            self-signed CA certificate (PEM). SuperNodes, the flwr CLI and
                          the SuperLink's own SuperExec use it to verify the SuperLink.
        ca.key            CA private key (PEM, mode 0600). Only needed to issue more certs.
        server.crt        SuperLink server certificate (PEM) signed by the CA. SAN:
                          DNS localhost, DNS <hostname>... (``--hostname``, repeatable,
                          default ``superlink``, the compose service name), IP 127.0.0.1,
                          IP ::1 and any ``--ip``.
        server.key        SuperLink server private key (PEM, mode 0600).
      keys/
        supernode-<i>     SuperNode i's authentication private key, i = 0..N-1
                          (OpenSSH format, ECDSA P-384, mode 0600).
        supernode-<i>.pub its public key (OpenSSH format, ``ecdsa-sha2-nistp384 ...``);
                          registered with ``flwr supernode register`` so the SuperLink
                          accepts this node.
      state/              empty; the SuperLink's database lives here (registrations
                          survive restarts).
      data/supernode-<i>/ empty (mode 0700); party i's own data in the one-machine and
                          Docker demos (compose.yaml mounts it read-only at /data, node
                          config data-path='/data'). Real parties keep it on their machines.

``docker/deploy.py`` later adds ``pids/`` (PIDs of the processes it started), ``proxy/``
(the nginx configuration, logs, temporary files) and, unless FLWR_HOME is set, ``.flwr/``
(FLWR_HOME: config.toml with the SuperLink connection, the installed app bundles). Keys and
certificates have no extension Flower bundles and ``.flwr/`` is excluded by the
repository's ``.gitignore``, which Flower applies when building the bundle; but Flower
bundles any ``*.py, *.toml, *.md, *.yaml, *.yml, *.json, *.jsonl`` file below the app
folder that the ROOT ``.gitignore`` does not exclude (``docker/.gitignore`` is not read),
so party data in such formats under ``data/`` would ship to every node unless the root
``.gitignore`` lists ``/docker/deploy/``.

What Flower 1.42 expects (read from its source):

* ``flower-superlink --ssl-ca-certfile ca.crt --ssl-certfile server.crt
  --ssl-keyfile server.key`` serves the Fleet, Control and Runtime APIs over HTTPS on one
  port. With the default ``--isolation subprocess`` the SuperLink starts a SuperExec that
  connects back to ``127.0.0.1:<port>`` (``0.0.0.0`` is rewritten to ``127.0.0.1``) and
  verifies the same certificate, so the server certificate must name 127.0.0.1 as well as
  the address SuperNodes use.
* ``flower-supernode --auth-supernode-private-key keys/supernode-<i>`` loads the key with
  ``load_ssh_private_key`` and requires an elliptic-curve key; ``flwr supernode register``
  loads the public key with ``load_ssh_public_key`` and accepts NIST curves only
  (P-256/P-384/P-521). Hence OpenSSH-encoded ECDSA P-384 keys.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import shutil
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_OUT = Path(__file__).resolve().parent / "deploy"
CURVE = ec.SECP384R1


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if private:
        # Create with 0600 from the start: the key is never readable by others.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(path, 0o600)
    else:
        path.write_bytes(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mixupfl deployment"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def make_ca(days: int) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(CURVE())
    now = dt.datetime.now(dt.timezone.utc)
    name = _name("mixupfl deployment CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA384())
    )
    return key, cert


def make_server_cert(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, *, hostnames: list[str],
    ips: list[str], days: int,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(CURVE())
    now = dt.datetime.now(dt.timezone.utc)
    dns = list(dict.fromkeys(["localhost", *hostnames]))
    addresses = list(dict.fromkeys(["127.0.0.1", "::1", *ips]))
    san = [x509.DNSName(h) for h in dns] + [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(dns[1] if len(dns) > 1 else dns[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=True, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    return key, cert


def make_node_keys(out_dir: Path, name: str) -> tuple[Path, Path]:
    """Write one SuperNode authentication key pair; returns (private, public) paths."""
    key = ec.generate_private_key(CURVE())
    private = out_dir / name
    public = out_dir / f"{name}.pub"
    _write(private, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ), private=True)
    _write(public, key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ) + f" {name}\n".encode())
    return private, public


def generate(
    out: Path, *, supernodes: int = 3, hostnames: list[str] | None = None, ips: list[str] | None = None,
    days: int = 365, force: bool = False,
) -> dict[str, Path]:
    """Create the whole folder; returns the main paths (see the module docstring)."""
    out = Path(out)
    if (out / "certs").exists() or (out / "keys").exists():
        if not force:
            raise FileExistsError(f"{out} already holds certs/ or keys/ (use --force to replace them)")
        shutil.rmtree(out / "certs", ignore_errors=True)
        shutil.rmtree(out / "keys", ignore_errors=True)
    certs, keys = out / "certs", out / "keys"
    ca_key, ca_cert = make_ca(days)
    _write(certs / "ca.crt", ca_cert.public_bytes(serialization.Encoding.PEM))
    _write(certs / "ca.key", _key_pem(ca_key), private=True)
    srv_key, srv_cert = make_server_cert(
        ca_key, ca_cert, hostnames=list(hostnames if hostnames is not None else ["superlink"]),
        ips=list(ips or []), days=days,
    )
    _write(certs / "server.crt", srv_cert.public_bytes(serialization.Encoding.PEM))
    _write(certs / "server.key", _key_pem(srv_key), private=True)
    keys.mkdir(parents=True, exist_ok=True)
    for i in range(supernodes):
        make_node_keys(keys, f"supernode-{i}")
    (out / "state").mkdir(parents=True, exist_ok=True)
    for i in range(supernodes):
        (out / "data" / f"supernode-{i}").mkdir(mode=0o700, parents=True, exist_ok=True)
    return {"out": out, "ca": certs / "ca.crt", "server_cert": certs / "server.crt",
            "server_key": certs / "server.key", "keys": keys}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    parser.add_argument("--supernodes", type=int, default=3, help="number of SuperNode key pairs (default 3)")
    parser.add_argument("--hostname", action="append", dest="hostnames", default=None,
                        help="extra DNS name in the SuperLink certificate (repeatable; default: superlink)")
    parser.add_argument("--ip", action="append", dest="ips", default=[],
                        help="extra IP address in the SuperLink certificate (repeatable)")
    parser.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    parser.add_argument("--force", action="store_true", help="replace existing certs/ and keys/")
    args = parser.parse_args(argv)
    if args.supernodes < 0:
        parser.error("--supernodes must be >= 0")
    try:
        paths = generate(args.out, supernodes=args.supernodes, hostnames=args.hostnames, ips=args.ips,
                         days=args.days, force=args.force)
    except FileExistsError as err:
        print(f"make_certs: {err}", file=sys.stderr)
        return 1
    print(f"CA and SuperLink certificate in {paths['out'] / 'certs'}; "
          f"{args.supernodes} SuperNode key pair(s) in {paths['keys']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
