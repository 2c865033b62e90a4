#!/usr/bin/env python3
"""Run the mixupfl app on a real Flower 1.42 deployment: one SuperLink behind an nginx
proxy and N SuperNodes, with TLS and SuperNode authentication, on one machine or in Docker
(``compose.yaml`` calls this same script, so both use the same flags).

Steps (``docker/README.md`` has the full walk-through)::

    python docker/make_certs.py                              # CA, server cert, node keys
    eval "$(python docker/deploy.py env)"                    # FLWR_HOME etc. for flwr
    python docker/deploy.py superlink &                      # 127.0.0.1:9093 only
    python docker/deploy.py proxy &                          # parties: 0.0.0.0:9092, Fleet API only
    python docker/deploy.py federation                       # [superlink.deploy] in config.toml
    python docker/deploy.py register                         # every keys/*.pub
    python docker/deploy.py supernode --index 0 --num-partitions 3 &   # and 1, 2
    python docker/deploy.py nodes --wait 3                   # until 3 are live
    flwr run . deploy --stream
    python docker/deploy.py stop

Sub-commands
    superlink   exec ``flower-superlink`` (TLS, ``--enable-supernode-auth``) on a loopback
                address; PID file ``<dir>/pids/superlink.pid``.
    proxy       write ``<dir>/proxy/nginx.conf`` from ``nginx.conf.template`` and exec nginx
                in the foreground: the Fleet API on the parties' address (``--listen``), the
                Control API only on ``--admin`` addresses, nothing else. PID file
                ``<dir>/pids/proxy.pid``.
    supernode   exec ``flower-supernode`` for partition ``--index``; PID file
                ``<dir>/pids/supernodes/<name>.pid`` (name: ``--name``, default the key's file
                name). Refuses to start a second process with the same name or key; waits out
                a stale ``online`` entry of its key (when ``--federation`` is configured here).
    federation  write ``[superlink.<name>]`` into ``$FLWR_HOME/config.toml``.
    register    register public keys (default ``<dir>/keys/*.pub``): "registered",
                "already registered", or LOCKED OUT (exit 1; the key of an unregistered node).
    unregister  unregister nodes by key name/file or ``--node-id`` (permanent for that key).
    reconcile   make the SuperLink's registered keys equal ``<dir>/keys/*.pub``: register the
                missing ones, unregister every other node (``--dry-run``: only show).
    nodes       list the nodes (name, status, liveness); ``--wait N`` blocks until N are live.
    stop        stop the folder's SuperNodes and wait for them (they deactivate themselves),
                clear what a killed one left ``online``, then the SuperLink, then the proxy.
    env         print the ``export`` lines of the environment every flwr process needs.
    --dry-run   on superlink/supernode/proxy: print the command (and the proxy's config).

A node is *live* when the SuperLink reports it online AND either a SuperNode process on
this machine holds its key and started before that activation, or the SuperLink saw the
node activate or heartbeat (``online_until`` moved) while ``nodes --wait`` was watching.
An ``online`` status alone can be stale: Flower keeps a node online up to 60 s after it
died without deactivating.

Every command sets ``FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1``,
``FLWR_TELEMETRY_ENABLED=0`` and ``FLWR_HOME`` (default ``<dir>/.flwr`` unless already
set; ``.flwr`` is left out of the app bundle by the repository's ``.gitignore``).
``<dir>`` is ``--dir``, else ``$MIXUPFL_DEPLOY_DIR``, else ``docker/deploy``; it is the
folder ``make_certs.py`` wrote (``certs/``, ``keys/``, ``state/``, ``data/``).

Flower 1.42 specifics (from its source): the SuperLink serves the Fleet, Control and
Runtime APIs as protobuf over HTTPS (FastAPI/uvicorn, HTTP/1.1) on ONE port; the Control
API has no account authentication in the open-source edition, hence the loopback bind and
the proxy. Each SuperNode also serves a local Runtime API (``--runtime-port``, default
9094 + index). An unregistered SuperNode exits (status 1) after "Exit Code: 305".
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the launcher_* modules next to this file
    sys.path.insert(0, str(HERE))

import launcher_control as control  # noqa: E402
import launcher_liveness as liveness_  # noqa: E402
import launcher_processes as processes  # noqa: E402
import launcher_proxy as proxy  # noqa: E402

DEFAULT_DIR = HERE / "deploy"
DEFAULT_PORT = 9093  # the SuperLink, loopback only
DEFAULT_PROXY_PORT = 9092  # the proxy's parties' address
DEFAULT_RUNTIME_PORT = 9094
DEFAULT_FEDERATION = "deploy"

FLOWER_ENV = {
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "FLWR_TELEMETRY_ENABLED": "0",
}

LockedOutError = control.LockedOutError
STALE_PATIENCE = liveness_.STALE_PATIENCE
local_holders = liveness_.local_holders
liveness = liveness_.liveness
wait_for_online = liveness_.wait_for_online
wait_out_stale = liveness_.wait_out_stale


# --------------------------------------------------------------------------- paths, env

def deploy_dir(value: str | os.PathLike | None = None) -> Path:
    raw = value or os.environ.get("MIXUPFL_DEPLOY_DIR") or DEFAULT_DIR
    return Path(raw).expanduser().resolve()


def flower_env(dirpath: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) plus what every flwr process needs."""
    env = dict(os.environ if base is None else base)
    env.update(FLOWER_ENV)
    env.setdefault("FLWR_HOME", str(dirpath / ".flwr"))
    return env


def executable(name: str, env: Mapping[str, str] | None = None) -> str:
    """Flower's console script ``name``: next to this Python first (an unactivated venv),
    else on PATH."""
    candidate = Path(sys.executable).with_name(name)
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name, path=(env or os.environ).get("PATH"))
    if not found:
        raise SystemExit(f"deploy: `{name}` not found (is flwr installed in this environment?)")
    return found


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise SystemExit(f"deploy: {what} not found at {path} (run docker/make_certs.py first)")
    return path


# --------------------------------------------------------------------------- commands

def superlink_command(dirpath: Path, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                      database: Path | None = None, log_file: Path | None = None,
                      env: Mapping[str, str] | None = None, allow_public: bool = False) -> list[str]:
    """``flower-superlink`` with TLS on all APIs and SuperNode authentication, on a loopback
    address unless ``allow_public`` (its Control API has no authentication)."""
    if not (allow_public or proxy.is_loopback(host)):
        raise SystemExit(f"deploy: --host {host} would expose the Control API (anyone reaching it can register "
                         "nodes and run code on every party); keep the SuperLink on 127.0.0.1 and let "
                         "`deploy.py proxy` serve the parties, or pass --unsafe-public-control-api")
    certs = dirpath / "certs"
    database = database or dirpath / "state" / "superlink.db"
    database.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        executable("flower-superlink", env),
        "--ssl-ca-certfile", str(_require(certs / "ca.crt", "CA certificate")),
        "--ssl-certfile", str(_require(certs / "server.crt", "SuperLink certificate")),
        "--ssl-keyfile", str(_require(certs / "server.key", "SuperLink key")),
        "--enable-supernode-auth",
        "--isolation", "subprocess",
        "--host", host,
        "--port", str(port),
        "--database", str(database),
    ]
    if log_file is not None:
        cmd += ["--log-file", str(log_file)]
    return cmd


def _quoted(key: str, value: str) -> str:
    if any(c in value for c in "'\"\\\n") or any(c.isspace() for c in value):
        raise SystemExit(f"deploy: {key} {value!r}: no spaces or quotes, please")
    return f"{key}='{value}'"


def supernode_command(dirpath: Path, *, index: int, num_partitions: int,
                      superlink: str = f"127.0.0.1:{DEFAULT_PROXY_PORT}", key: Path | None = None,
                      runtime_host: str = "127.0.0.1", runtime_port: int | None = None,
                      max_wait_time: float | None = None, node_config: str = "",
                      data_path: str | None = None, data_format: str | None = None,
                      env: Mapping[str, str] | None = None) -> list[str]:
    """``flower-supernode`` for partition ``index`` of ``num_partitions``, verifying the
    SuperLink (or its proxy) with the CA and signing its requests with its own key.
    ``node_config`` adds node-config entries (``require-secure-rng=true`` makes the
    ClientApp refuse seeded mixing randomness); ``data_path``/``data_format`` name the
    party's own data on its disk (``data-path``/``data-format``)."""
    if not 0 <= index < num_partitions:
        raise SystemExit(f"deploy: --index {index} is outside 0..{num_partitions - 1}")
    key = key or dirpath / "keys" / f"supernode-{index}"
    entries = [f"partition-id={index}", f"num-partitions={num_partitions}", node_config.strip()]
    if data_path:
        entries.append(_quoted("data-path", data_path))
    if data_format:
        entries.append(_quoted("data-format", data_format))
    cmd = [
        executable("flower-supernode", env),
        "--superlink", superlink,
        "--root-certificates", str(_require(dirpath / "certs" / "ca.crt", "CA certificate")),
        "--auth-supernode-private-key", str(_require(key, "SuperNode private key")),
        "--node-config", " ".join(e for e in entries if e),
        "--isolation", "subprocess",
        "--host", runtime_host,
        "--port", str(runtime_port if runtime_port is not None else DEFAULT_RUNTIME_PORT + index),
    ]
    if max_wait_time is not None:
        cmd += ["--max-wait-time", str(max_wait_time)]
    return cmd


def write_federation(flwr_home: Path, *, name: str = DEFAULT_FEDERATION,
                     address: str = f"127.0.0.1:{DEFAULT_PORT}", root_cert: Path,
                     make_default: bool = False) -> Path:
    """Add or replace ``[superlink.<name>]`` in ``$FLWR_HOME/config.toml`` (Flower 1.42 keeps
    SuperLink connections there, not in pyproject.toml). Other entries are kept."""
    import tomllib

    import tomli_w

    root_cert = Path(root_cert).expanduser().resolve()  # Flower requires an absolute path
    path = Path(flwr_home).expanduser() / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = tomllib.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    superlinks = data.setdefault("superlink", {})
    superlinks[name] = {"address": address, "root-certificates": str(root_cert), "insecure": False}
    if make_default:
        superlinks["default"] = name
    path.write_text(tomli_w.dumps(data), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- registrations

def register_key(public_key: Path, *, federation: str, env: Mapping[str, str]) -> str:
    """Register one SuperNode public key: returns its node id, or ``"already registered"``;
    raises ``LockedOutError`` for the key of an unregistered node (Flower 1.42 refuses it
    for good) and ``ControlError`` for any other failure."""
    with control.control_client(federation, env) as client:
        outcome, _, node_id = control.register(client, control.public_key_pem(public_key),
                                               control.key_name(public_key))
    return str(node_id) if outcome == "registered" else outcome


def list_nodes(*, federation: str, env: Mapping[str, str]) -> list[dict]:
    """The SuperLink's node records (``node-id``, ``status``: registered / online / offline /
    unregistered, ``name``, ``public-key``, ...), unregistered ones included."""
    with control.control_client(federation, env) as client:
        return [node.as_dict() for node in control.list_nodes(client)]


def _key_pems(dirpath: Path) -> dict[str, bytes]:
    """{name: public key} of ``<dir>/keys/*.pub``."""
    return {control.key_name(p): control.public_key_pem(p) for p in sorted((dirpath / "keys").glob("*.pub"))}


def _resolve_key(dirpath: Path, value: str) -> Path:
    path = Path(value)
    for candidate in (path, dirpath / "keys" / f"{value}.pub", dirpath / "keys" / value):
        if candidate.is_file():
            return candidate
    raise SystemExit(f"deploy: no key file {value!r} (neither a path nor {dirpath / 'keys'}/{value}.pub)")


# --------------------------------------------------------------------------- stop

def stop(dirpath: Path, timeout: float = 30, log=print) -> list[int]:
    """Stop the folder's processes: SuperNodes first, waiting for them and their
    descendants (each deactivates itself at the SuperLink, through the proxy if it uses
    one); then, for any of its SuperNodes the SuperLink still reports online (one that
    was killed, now or before), a ``DeactivateNode`` signed with its key; then the
    SuperLink; then the proxy. Returns the PIDs signalled."""
    superlinks = processes.deployment_processes(dirpath, roles=["superlink"])

    def clear_stale(stopped: list[tuple[str, Path]]) -> None:
        if not stopped or not superlinks or not superlinks[0].alive():
            return
        link = superlinks[0]
        host = link.option("--host") or "127.0.0.1"
        host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        address = f"[{host}]:{link.option('--port')}" if ":" in host else f"{host}:{link.option('--port')}"
        try:
            root = (dirpath / "certs" / "ca.crt").read_bytes()
            with control.control_client_at(address, root) as client:
                nodes = control.list_nodes(client)
        except (OSError, control.ControlError) as err:
            log(f"could not check the SuperLink for stale online entries: {err}")
            return
        for name, path in stopped:
            try:
                node, _ = control.find(nodes, control.public_key_pem(path))
                if node is not None and node.status == "online":
                    control.deactivate_with_key(address, root, path, node.node_id)
                    log(f"cleared the stale online entry of {name} (node {node.node_id})")
            except (OSError, ValueError, control.ControlError) as err:
                log(f"could not clear the online entry of {name}: {err}")

    stopped = processes.stop(dirpath, timeout=timeout, after_supernodes=clear_stale, log=log)
    return [p.pid for p in stopped]


# --------------------------------------------------------------------------- exec

def _exec(cmd: list[str], env: dict[str, str], pid_file: Path, dry_run: bool, key: Path | None = None) -> int:
    if dry_run:
        print(shlex.join(cmd))
        return 0
    try:
        processes.write_pid_file(pid_file, key=key)  # exec keeps the PID and start time
    except OSError as err:  # e.g. a read-only folder in a container: `stop` is not needed there
        print(f"deploy: no PID file ({err})", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(cmd[0], cmd, env)
    return 1  # not reached


def _refuse_duplicate(dirpath: Path, name: str, key: Path) -> None:
    entry = processes.read_pid_file(processes.pid_file(dirpath, "supernode", name))
    if entry is not None and processes.alive(*entry):
        raise SystemExit(f"deploy: SuperNode {name} already runs (PID {entry[0]}); stop it first or pass --name")
    try:
        pem = control.public_key_pem(key)
    except (OSError, ValueError):
        return
    if (holder := local_holders().get(pem)) is not None:
        raise SystemExit(f"deploy: PID {holder[0].pid} already runs a SuperNode with this key ({key})")


# --------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default=None,
                        help="deployment folder written by make_certs.py "
                             f"(default $MIXUPFL_DEPLOY_DIR or {DEFAULT_DIR})")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("superlink", help="start flower-superlink (TLS + SuperNode auth, loopback)")
    p.add_argument("--host", default="127.0.0.1", help="bind address: loopback (the proxy serves the parties)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="Fleet/Control/Runtime HTTPS port")
    p.add_argument("--database", type=Path, default=None, help="default <dir>/state/superlink.db")
    p.add_argument("--log-file", type=Path, default=None)
    p.add_argument("--unsafe-public-control-api", action="store_true",
                   help="allow a non-loopback --host (exposes the unauthenticated Control API)")
    p.add_argument("--dry-run", action="store_true")

    p = sub.add_parser("proxy", help="start nginx: Fleet API for the parties, Control API for admins only")
    p.add_argument("--listen", default=f"0.0.0.0:{DEFAULT_PROXY_PORT}",
                   help="the parties' address host:port (Fleet API only)")
    p.add_argument("--admin", action="append", default=[], metavar="HOST:PORT",
                   help="an operator address for the Control API (repeatable; default none: loopback only)")
    p.add_argument("--superlink", default=f"127.0.0.1:{DEFAULT_PORT}", help="the SuperLink's loopback host:port")
    p.add_argument("--upstream-name", default="localhost",
                   help="name checked in the SuperLink's certificate (default localhost)")
    p.add_argument("--max-body-mb", type=int, default=64,
                   help="largest request body passed (Flower sends arrays in <= 5 MiB chunks; default 64)")
    p.add_argument("--nginx", default=None, help="nginx executable (default: PATH, then /usr/sbin/nginx)")
    p.add_argument("--dry-run", action="store_true", help="print the configuration and the command")

    p = sub.add_parser("supernode", help="start flower-supernode for one partition")
    p.add_argument("--index", type=int, required=True, help="partition-id (and key supernode-<index>)")
    p.add_argument("--num-partitions", type=int, required=True)
    p.add_argument("--superlink", default=f"127.0.0.1:{DEFAULT_PROXY_PORT}",
                   help=f"the proxy's (parties') host:port (default 127.0.0.1:{DEFAULT_PROXY_PORT})")
    p.add_argument("--key", type=Path, default=None, help="default <dir>/keys/supernode-<index>")
    p.add_argument("--name", default=None, help="PID file name (default: the key's file name)")
    p.add_argument("--runtime-host", default="127.0.0.1")
    p.add_argument("--runtime-port", type=int, default=None,
                   help=f"local Runtime API port (default {DEFAULT_RUNTIME_PORT} + index)")
    p.add_argument("--max-wait-time", type=float, default=None,
                   help="give up connecting to the SuperLink after this many seconds")
    p.add_argument("--node-config", default="require-secure-rng=true",
                   help="more node-config entries, space-separated key=value (default: require-secure-rng=true; "
                   "the ClientApp then refuses runs without secure-rng = true)")
    p.add_argument("--data-path", default=None, help="node config data-path: the party's data on its own disk")
    p.add_argument("--data-format", default=None, help="node config data-format")
    p.add_argument("--federation", default=DEFAULT_FEDERATION,
                   help="SuperLink connection used to wait out a stale online entry (skipped if absent)")
    p.add_argument("--stale-wait", type=float, default=STALE_PATIENCE, help="0: do not check")
    p.add_argument("--dry-run", action="store_true")

    p = sub.add_parser("federation", help="write [superlink.<name>] into $FLWR_HOME/config.toml")
    p.add_argument("--name", default=DEFAULT_FEDERATION)
    p.add_argument("--address", default=f"127.0.0.1:{DEFAULT_PORT}",
                   help="the SuperLink's (or an admin proxy address's) host:port")
    p.add_argument("--root-cert", type=Path, default=None, help="default <dir>/certs/ca.crt")
    p.add_argument("--default", action="store_true", help="also make it the default connection")

    p = sub.add_parser("register", help="register SuperNode public keys with the SuperLink")
    p.add_argument("keys", nargs="*", type=Path, help="public keys (default <dir>/keys/*.pub)")
    p.add_argument("--federation", default=DEFAULT_FEDERATION)

    p = sub.add_parser("unregister", help="unregister SuperNodes (their keys are then refused for good)")
    p.add_argument("keys", nargs="*", help="key names (supernode-3) or key files")
    p.add_argument("--node-id", type=int, action="append", default=[], help="a node id (repeatable)")
    p.add_argument("--federation", default=DEFAULT_FEDERATION)

    p = sub.add_parser("reconcile", help="make the registered keys equal <dir>/keys/*.pub")
    p.add_argument("--federation", default=DEFAULT_FEDERATION)
    p.add_argument("--dry-run", action="store_true", help="only show what would change")

    p = sub.add_parser("nodes", help="list the SuperNodes the SuperLink knows")
    p.add_argument("--federation", default=DEFAULT_FEDERATION)
    p.add_argument("--wait", type=int, default=None, metavar="N", help="block until N are live")
    p.add_argument("--timeout", type=float, default=120)

    p = sub.add_parser("stop", help="stop the SuperNodes, then the SuperLink, then the proxy of this folder")
    p.add_argument("--timeout", type=float, default=30, help="per group, before SIGKILL")

    sub.add_parser("env", help="print export lines for the flwr environment")
    return parser


def _names(dirpath: Path) -> dict[bytes, str]:
    try:
        return {pem: name for name, pem in _key_pems(dirpath).items()}
    except (OSError, ValueError):
        return {}


def _registrations(args, dirpath: Path, env: dict[str, str]) -> int:
    """register / unregister / reconcile."""
    failed = 0
    with control.control_client(args.federation, env) as client:
        if args.command == "register":
            keys = args.keys or sorted((dirpath / "keys").glob("*.pub"))
            if not keys:
                raise SystemExit(f"deploy: no public keys given and none in {dirpath / 'keys'}")
            for key in keys:
                name = control.key_name(key)
                try:
                    outcome, node, node_id = control.register(client, control.public_key_pem(key), name)
                except control.LockedOutError as err:
                    print(str(err))
                    failed += 1
                    continue
                detail = f", {node.status}" if node is not None else ""
                print(f"{name}: {outcome} (node {node_id}{detail})")
        elif args.command == "unregister":
            if not args.keys and not args.node_id:
                raise SystemExit("deploy: name the keys or --node-id of the nodes to unregister")
            nodes = control.list_nodes(client)
            targets = [(str(i), i) for i in args.node_id]
            for value in args.keys:
                node, retired = control.find(nodes, control.public_key_pem(_resolve_key(dirpath, value)))
                if node is None:
                    print(f"{value}: not registered" + (" (already unregistered)" if retired else ""))
                    failed += 1
                else:
                    targets.append((value, node.node_id))
            for label, node_id in targets:
                try:
                    control.unregister(client, node_id)
                    print(f"{label}: unregistered node {node_id}; Flower 1.42 will refuse this key from now on")
                except control.ControlError as err:
                    print(f"{label}: {err}")
                    failed += 1
        else:  # reconcile
            plan = control.plan_reconcile(control.list_nodes(client), _key_pems(dirpath))
            names = _names(dirpath)
            verb = "would " if args.dry_run else ""
            for name, node in plan.keep:
                print(f"{name}: registered (node {node.node_id}, {node.status})")
            for node in plan.unregister:
                label = node.name or names.get(node.public_key) or "key not in keys/"
                if not args.dry_run:
                    control.unregister(client, node.node_id)
                print(f"node {node.node_id} ({label}, {node.status}): {verb}unregister (its key is not in keys/)")
            for name, public_key in plan.register:
                if args.dry_run:
                    print(f"{name}: would register")
                    continue
                outcome, _, node_id = control.register(client, public_key, name)
                print(f"{name}: {outcome} (node {node_id})")
            for name, node in plan.locked:
                print(f"{name}: LOCKED OUT (node {node.node_id} unregistered {node.unregistered_at}); "
                      "Flower 1.42 never accepts this key again: give the party a new key pair")
            failed += len(plan.locked)
            if plan.in_sync:
                print("in sync: the registered keys are exactly keys/*.pub")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    dirpath = deploy_dir(args.dir)
    env = flower_env(dirpath)
    if args.command not in ("env", "proxy", "stop"):
        try:
            Path(env["FLWR_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)
        except OSError as err:
            print(f"deploy: cannot create FLWR_HOME ({err})", file=sys.stderr)

    if args.command == "superlink":
        cmd = superlink_command(dirpath, host=args.host, port=args.port, database=args.database,
                                log_file=args.log_file, env=env, allow_public=args.unsafe_public_control_api)
        return _exec(cmd, env, processes.pid_file(dirpath, "superlink"), args.dry_run)
    if args.command == "proxy":
        text = proxy.proxy_config(dirpath, listen=args.listen, admin=args.admin, superlink=args.superlink,
                                  upstream_name=args.upstream_name, max_body_mb=args.max_body_mb)
        nginx = proxy.nginx_executable(args.nginx) if not args.dry_run else (args.nginx or "nginx")
        if args.dry_run:
            print(text)
            print("# " + shlex.join(proxy.nginx_command(nginx, dirpath, dirpath / "proxy" / "nginx.conf")))
            return 0
        for path in ("server.crt", "server.key", "ca.crt"):
            _require(dirpath / "certs" / path, f"certs/{path}")
        conf = proxy.write_config(dirpath, text)
        return _exec(proxy.nginx_command(nginx, dirpath, conf), env, processes.pid_file(dirpath, "proxy"), False)
    if args.command == "supernode":
        key = args.key or dirpath / "keys" / f"supernode-{args.index}"
        name = args.name or key.name
        cmd = supernode_command(dirpath, index=args.index, num_partitions=args.num_partitions,
                                superlink=args.superlink, key=key, runtime_host=args.runtime_host,
                                runtime_port=args.runtime_port, max_wait_time=args.max_wait_time,
                                node_config=args.node_config, data_path=args.data_path,
                                data_format=args.data_format, env=env)
        pid_file = processes.pid_file(dirpath, "supernode", name)
        if not args.dry_run:
            _refuse_duplicate(dirpath, name, key)
            if args.stale_wait > 0:
                try:
                    wait_out_stale(control.public_key_pem(key), name, federation=args.federation, env=env,
                                   patience=args.stale_wait)
                except (OSError, ValueError):
                    pass
        return _exec(cmd, env, pid_file, args.dry_run, key=key)
    if args.command == "federation":
        path = write_federation(Path(env["FLWR_HOME"]), name=args.name, address=args.address,
                                root_cert=args.root_cert or _require(dirpath / "certs" / "ca.crt", "CA certificate"),
                                make_default=args.default)
        print(f"SuperLink connection '{args.name}' -> {args.address} written to {path}")
        return 0
    if args.command in ("register", "unregister", "reconcile"):
        try:
            return _registrations(args, dirpath, env)
        except control.ControlError as err:
            print(f"deploy: {err}", file=sys.stderr)
            return 1
    if args.command == "nodes":
        try:
            if args.wait is not None:
                records = wait_for_online(args.wait, federation=args.federation, env=env, timeout=args.timeout)
            else:
                with control.control_client(args.federation, env) as client:
                    nodes = control.list_nodes(client)
                holders = local_holders()
                records = [{**n.as_dict(), "live": liveness(n, {}, holders)} for n in nodes]
        except (control.ControlError, TimeoutError) as err:
            print(f"deploy: {err}", file=sys.stderr)
            return 1
        names = _names(dirpath)
        for record in records:
            name = record["name"] or names.get(record["public-key"].encode(), "")
            live = f"  live: {record['live']}" if record["live"] else ""
            print(f"{record['node-id']:>22}  {name or '-':<16} {record['status']}{live}")
        return 0
    if args.command == "stop":
        pids = stop(dirpath, timeout=args.timeout)
        print(f"stopped {len(pids)} process(es): {' '.join(map(str, pids)) or '-'}")
        return 0
    if args.command == "env":
        for key in (*FLOWER_ENV, "FLWR_HOME"):
            print(f"export {key}={shlex.quote(env[key])}")
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
