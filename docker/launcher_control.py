"""SuperNode registrations through the SuperLink's Control API, for ``docker/deploy.py``:
list (with each node's public key), register, unregister, reconcile with a keys folder,
and a stopped node's own Fleet API ``DeactivateNode`` (signed with its key).

It uses Flower 1.42's own protobuf-over-HTTPS clients in this process (the ``flwr`` CLI's
JSON output leaves out the public keys, which are what tells a node's key apart).

Facts of Flower 1.42 this relies on (from its source):

* ``RegisterNode`` stores the key with a UNIQUE constraint; ``UnregisterNode`` only marks
  the record ``unregistered`` and keeps the key. So an unregistered key can never be
  registered again ("Public key already in use"): it is locked out for good, and the party
  needs a new key pair.
* A node is ``online`` until ``online_until`` = last activation or heartbeat + 2 x its
  heartbeat interval (30 s). A node that dies without ``DeactivateNode`` stays ``online``
  up to 60 s, and ``ActivateNode`` for its key fails meanwhile (``[code: 2004]``).
"""

from __future__ import annotations

import contextlib
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

NIST_CURVES = ("secp256r1", "secp384r1", "secp521r1")


class ControlError(RuntimeError):
    """A Control (or Fleet) API call failed; ``code`` is Flower's ApiErrorCode if known."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class LockedOutError(ControlError):
    """The key belongs to an unregistered node: Flower 1.42 refuses it for good."""


@dataclass(frozen=True)
class Node:
    node_id: int
    status: str  # registered | online | offline | unregistered
    public_key: bytes  # PEM SubjectPublicKeyInfo, as Flower stores it
    name: str = ""
    registered_at: str = ""
    last_activated_at: str = ""
    last_deactivated_at: str = ""
    unregistered_at: str = ""
    online_until: float = 0.0
    heartbeat_interval: float = 0.0

    def as_dict(self) -> dict:
        return {"node-id": str(self.node_id), "status": self.status, "name": self.name,
                "registered-at": self.registered_at, "online-at": self.last_activated_at,
                "offline-at": self.last_deactivated_at, "deleted-at": self.unregistered_at,
                "online-until": self.online_until, "public-key": self.public_key.decode(errors="replace")}


# --------------------------------------------------------------------------- keys

def public_key_pem(path: Path) -> bytes:
    """The PEM SubjectPublicKeyInfo Flower stores for a key file: an OpenSSH or PEM public
    key, or an OpenSSH / PEM private key (its public half). NIST curves only, as Flower."""
    data = Path(path).read_bytes()
    key = None
    for load in (serialization.load_ssh_public_key, serialization.load_pem_public_key):
        try:
            key = load(data)
            break
        except (ValueError, TypeError, UnsupportedAlgorithm):
            continue
    if key is None:
        for load in (serialization.load_ssh_private_key, serialization.load_pem_private_key):
            try:
                key = load(data, password=None).public_key()
                break
            except (ValueError, TypeError, UnsupportedAlgorithm):
                continue
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in NIST_CURVES:
        raise ValueError(f"{path}: not a NIST elliptic-curve key (Flower accepts P-256/P-384/P-521)")
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_name(path: Path) -> str:
    """``keys/supernode-0.pub`` -> ``supernode-0``."""
    path = Path(path)
    return path.stem if path.suffix == ".pub" else path.name


# --------------------------------------------------------------------------- connection

def connection(federation: str, env: Mapping[str, str]) -> tuple[str, bytes]:
    """(address, CA certificate bytes) of ``[superlink.<federation>]`` in
    ``$FLWR_HOME/config.toml``."""
    home = Path(env.get("FLWR_HOME") or "~/.flwr").expanduser()
    path = home / "config.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ControlError(f"no {path}: run `deploy.py federation` first") from None
    entry = data.get("superlink", {}).get(federation)
    if not isinstance(entry, dict) or "address" not in entry:
        raise ControlError(f"no SuperLink connection '{federation}' in {path}: run `deploy.py federation`")
    if entry.get("insecure"):
        raise ControlError(f"SuperLink connection '{federation}' is insecure; this launcher uses TLS only")
    return str(entry["address"]), Path(entry["root-certificates"]).expanduser().read_bytes()


def _translate(err: Exception) -> ControlError:
    import httpx
    from flwr.supercore.error import FlowerError

    if isinstance(err, httpx.HTTPStatusError):
        if flower_error := FlowerError.from_json(err.response.text):
            return ControlError(f"[code: {flower_error.code}] {flower_error.message}", int(flower_error.code))
        return ControlError(f"HTTP {err.response.status_code} from {err.request.url}: {err.response.text[:200]}")
    return ControlError(f"SuperLink not reachable: {err}")


def control_client(federation: str, env: Mapping[str, str]):
    """Flower's ``ControlHttpClient`` for ``[superlink.<federation>]`` (context manager)."""
    return control_client_at(*connection(federation, env))


@contextlib.contextmanager
def control_client_at(address: str, root: bytes) -> Iterator:
    """Flower's ``ControlHttpClient`` for ``address`` (CA ``root``), with the flwr CLI's
    headers."""
    from flwr.cli.cli_client_interceptor import CliClientHttpInterceptor
    from flwr.supercore.control import ControlHttpClient
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor

    client = ControlHttpClient.from_server_address(
        server_address=address, insecure=False, root_certificates=root,
        interceptors=[CliClientHttpInterceptor(), RuntimeVersionHttpInterceptor(component_name="flwr CLI")],
    )
    try:
        yield client
    finally:
        client.close()


def _call(method, request):
    import httpx

    try:
        return method(request)
    except httpx.HTTPError as err:
        raise _translate(err) from None


def list_nodes(client) -> list[Node]:
    from flwr.proto.control_pb2 import ListNodesRequest  # pylint: disable=E0611

    response = _call(client.ListNodes, ListNodesRequest())
    return [Node(node_id=n.node_id, status=n.status, public_key=bytes(n.public_key), name=n.name,
                 registered_at=n.registered_at, last_activated_at=n.last_activated_at,
                 last_deactivated_at=n.last_deactivated_at, unregistered_at=n.unregistered_at,
                 online_until=n.online_until, heartbeat_interval=n.heartbeat_interval)
            for n in response.nodes_info]


def find(nodes: list[Node], public_key: bytes) -> tuple[Node | None, list[Node]]:
    """(the node holding ``public_key`` now, the unregistered records of it)."""
    current = [n for n in nodes if n.public_key == public_key and n.status != "unregistered"]
    retired = [n for n in nodes if n.public_key == public_key and n.status == "unregistered"]
    return (current[0] if current else None), retired


def register(client, public_key: bytes, name: str) -> tuple[str, Node | None, int]:
    """Register one key. Returns ("registered", None, node id) or ("already registered",
    node, node id); raises ``LockedOutError`` for a key an unregistered node held."""
    from flwr.proto.control_pb2 import RegisterNodeRequest  # pylint: disable=E0611

    nodes = list_nodes(client)
    current, retired = find(nodes, public_key)
    if current is not None:
        return "already registered", current, current.node_id
    if retired:
        raise LockedOutError(
            f"{name}: LOCKED OUT, its key belonged to node {retired[0].node_id}, unregistered "
            f"{retired[0].unregistered_at}; Flower 1.42 never accepts an unregistered key again: "
            "give this party a new key pair (make_certs.py, or ssh-keygen -t ecdsa -b 384)")
    request = RegisterNodeRequest(public_key=public_key)
    if name:
        request.name = name
    try:
        response = _call(client.RegisterNode, request)
    except ControlError as err:
        if err.code == 23:  # PUBLIC_KEY_ALREADY_IN_USE: raced with another registration
            current, retired = find(list_nodes(client), public_key)
            if current is not None:
                return "already registered", current, current.node_id
            raise LockedOutError(f"{name}: LOCKED OUT ({err})") from None
        raise
    return "registered", None, int(response.node_id)


def unregister(client, node_id: int) -> None:
    from flwr.proto.control_pb2 import UnregisterNodeRequest  # pylint: disable=E0611

    _call(client.UnregisterNode, UnregisterNodeRequest(node_id=node_id))


def deactivate_with_key(address: str, root: bytes, private_key: Path, node_id: int) -> None:
    """``DeactivateNode`` on the Fleet API, signed with the node's own key, as the node does
    when it stops cleanly: clears an ``online`` entry a killed node left behind."""
    from flwr.proto.fleet_pb2 import DeactivateNodeRequest  # pylint: disable=E0611
    from flwr.supercore.interceptors import RuntimeVersionHttpInterceptor
    from flwr.supernode.fleet_http_client import FleetHttpClient
    from flwr.supernode.node_auth_http_interceptor import NodeAuthHttpInterceptor

    key = serialization.load_ssh_private_key(Path(private_key).read_bytes(), password=None)
    client = FleetHttpClient.from_server_address(
        address, False, root,
        interceptors=[RuntimeVersionHttpInterceptor(component_name="SuperNode"),
                      NodeAuthHttpInterceptor(key, key.public_key())],
    )
    try:
        _call(client.DeactivateNode, DeactivateNodeRequest(node_id=node_id))
    finally:
        client.close()


# --------------------------------------------------------------------------- reconcile

@dataclass
class ReconcilePlan:
    keep: list[tuple[str, Node]] = field(default_factory=list)
    register: list[tuple[str, bytes]] = field(default_factory=list)
    locked: list[tuple[str, Node]] = field(default_factory=list)
    unregister: list[Node] = field(default_factory=list)

    @property
    def in_sync(self) -> bool:
        return not (self.register or self.locked or self.unregister)


def plan_reconcile(nodes: list[Node], wanted: Mapping[str, bytes]) -> ReconcilePlan:
    """What makes the SuperLink's registered keys (every status but ``unregistered``)
    equal ``wanted`` ({name: public key})."""
    plan = ReconcilePlan()
    keys = set(wanted.values())
    for name, public_key in sorted(wanted.items()):
        current, retired = find(nodes, public_key)
        if current is not None:
            plan.keep.append((name, current))
        elif retired:
            plan.locked.append((name, retired[0]))
        else:
            plan.register.append((name, public_key))
    plan.unregister = [n for n in nodes if n.status != "unregistered" and n.public_key not in keys]
    return plan
