#!/usr/bin/env python3
"""Run the mixupfl app on a real Flower 1.41 deployment: one SuperLink and N SuperNodes,
with TLS and SuperNode authentication, on one machine or in Docker (``compose.yaml`` calls
this same script, so both use the same flags).

Steps (``docker/README.md`` has the full walk-through)::

    python docker/make_certs.py                              # CA, server cert, node keys
    eval "$(python docker/deploy.py env)"                    # FLWR_HOME etc. for flwr
    python docker/deploy.py superlink &                      # TLS + --enable-supernode-auth
    python docker/deploy.py federation                       # [superlink.deploy] in config.toml
    python docker/deploy.py register                         # every keys/*.pub
    python docker/deploy.py supernode --index 0 --num-partitions 3 &   # and 1, 2
    python docker/deploy.py nodes --wait 3                   # until 3 are online
    flwr run . deploy --stream
    python docker/deploy.py stop

Sub-commands
    superlink   exec ``flower-superlink`` (the process keeps this PID; it is written to
                ``<dir>/pids/superlink.pid``).
    supernode   exec ``flower-supernode`` for partition ``--index`` (PID file
                ``<dir>/pids/supernode-<i>.pid``).
    federation  write the SuperLink connection ``[superlink.<name>]`` into
                ``$FLWR_HOME/config.toml`` (address, root-certificates, insecure = false).
    register    ``flwr supernode register <key.pub> <name>`` for each public key; a key
                that is already registered counts as done.
    nodes       ``flwr supernode list <name>``: print the nodes; ``--wait N`` blocks until N
                are online.
    stop        SIGTERM to the processes in ``<dir>/pids`` (checked to still be Flower's),
                wait until they and their SuperExec/app subprocesses are gone.
    env         print the ``export`` lines of the environment every flwr process needs.
    --dry-run   on superlink/supernode: print the command instead of running it.

Every command sets ``FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1`` (the app's
dependencies are already installed; Flower would otherwise ``uv sync`` each run),
``FLWR_TELEMETRY_ENABLED=0`` and ``FLWR_HOME`` (default ``<dir>/.flwr`` unless already
set; a ``.flwr`` folder is left out of the app bundle ``flwr run .`` builds, through the
repository's ``.gitignore``, whereas e.g. ``flwr-home/apps/**.py`` would be bundled).
``<dir>`` is ``--dir``, else ``$MIXUPFL_DEPLOY_DIR``, else ``docker/deploy``; it is the
folder ``make_certs.py`` wrote (``certs/``, ``keys/``, ``state/``).

Flower 1.41 specifics (from its source): the SuperLink serves the Fleet, Control and
Runtime APIs over HTTPS on ONE port (``--host``/``--port``; ``--fleet-api-address`` and
``--control-api-address`` are deprecated). Each SuperNode also serves a local Runtime API
(``--host``/``--port``, default 127.0.0.1:9094), so SuperNodes sharing a machine need
distinct ports (default here 9094 + index). With ``--enable-supernode-auth`` the SuperLink
accepts only SuperNodes whose public key was registered through the Control API; an
unregistered one exits (status 1) after logging "Exit Code: 305 ... Failed to activate
SuperNode".
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DIR = HERE / "deploy"
DEFAULT_PORT = 9093
DEFAULT_RUNTIME_PORT = 9094
DEFAULT_FEDERATION = "deploy"

FLOWER_ENV = {
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "FLWR_TELEMETRY_ENABLED": "0",
}


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
                      env: Mapping[str, str] | None = None) -> list[str]:
    """``flower-superlink`` with TLS on all APIs and SuperNode authentication."""
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


def supernode_command(dirpath: Path, *, index: int, num_partitions: int,
                      superlink: str = f"127.0.0.1:{DEFAULT_PORT}", key: Path | None = None,
                      runtime_host: str = "127.0.0.1", runtime_port: int | None = None,
                      max_wait_time: float | None = None, node_config: str = "",
                      env: Mapping[str, str] | None = None) -> list[str]:
    """``flower-supernode`` for partition ``index`` of ``num_partitions``, verifying the
    SuperLink with the CA and signing its requests with its own key. ``node_config`` adds
    entries to the node config (``require-secure-rng=true`` makes the ClientApp refuse
    seeded mixing randomness)."""
    if not 0 <= index < num_partitions:
        raise SystemExit(f"deploy: --index {index} is outside 0..{num_partitions - 1}")
    key = key or dirpath / "keys" / f"supernode-{index}"
    cmd = [
        executable("flower-supernode", env),
        "--superlink", superlink,
        "--root-certificates", str(_require(dirpath / "certs" / "ca.crt", "CA certificate")),
        "--auth-supernode-private-key", str(_require(key, "SuperNode private key")),
        "--node-config", f"partition-id={index} num-partitions={num_partitions} {node_config}".strip(),
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
    """Add or replace ``[superlink.<name>]`` in ``$FLWR_HOME/config.toml`` (Flower 1.41 keeps
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


def _json_tail(text: str) -> dict:
    """The JSON object a ``flwr ... --format json`` command printed (it is the last thing
    on stdout)."""
    start = text.find("{")
    while start != -1:
        try:
            return json.loads(text[start:])
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
    raise ValueError(f"no JSON in flwr output: {text[-500:]!r}")


def _flwr(args: Sequence[str], env: Mapping[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([executable("flwr", env), *args], env=dict(env), capture_output=True,
                          text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)


def register_key(public_key: Path, *, federation: str, env: Mapping[str, str]) -> str:
    """Register one SuperNode public key; returns the node id, or ``"already registered"``.

    Note: with ``--format json`` Flower 1.41 exits 0 even when registration fails, the
    failure is only in the JSON (``"success": false``); it is checked here."""
    proc = _flwr(["supernode", "register", str(public_key), federation, "--format", "json"], env)
    try:
        result = _json_tail(proc.stdout)
    except ValueError as err:
        raise RuntimeError(f"flwr supernode register {public_key} failed (exit {proc.returncode}): "
                           f"{proc.stdout}{proc.stderr}") from err
    if result.get("success"):
        return str(result["node-id"])
    message = str(result.get("error-message", ""))
    if "already in use" in message:
        return "already registered"
    raise RuntimeError(f"flwr supernode register {public_key} failed: {message}")


def list_nodes(*, federation: str, env: Mapping[str, str]) -> list[dict]:
    """``flwr supernode list <federation> --format json`` as a list of node records
    (``node-id``, ``status``: registered / online / offline / unregistered, ...)."""
    proc = _flwr(["supernode", "list", federation, "--format", "json"], env)
    result = _json_tail(proc.stdout)
    if not result.get("success"):
        raise RuntimeError(f"flwr supernode list failed: {result.get('error-message', proc.stderr)}")
    return list(result["nodes"])


def wait_for_online(count: int, *, federation: str, env: Mapping[str, str], timeout: float = 120,
                    poll: float = 1.0) -> list[dict]:
    """Block until at least ``count`` nodes are online; returns the node list."""
    deadline = time.monotonic() + timeout
    nodes: list[dict] = []
    while True:
        try:
            nodes = list_nodes(federation=federation, env=env)
        except (RuntimeError, ValueError, subprocess.TimeoutExpired):
            nodes = []
        if sum(n["status"] == "online" for n in nodes) >= count:
            return nodes
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} SuperNodes not online after {timeout:.0f} s: {nodes}")
        time.sleep(poll)


# --------------------------------------------------------------------------- pid files

def _pid_file(dirpath: Path, name: str) -> Path:
    return dirpath / "pids" / f"{name}.pid"


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent PID, state, start time) from /proc; None when the process is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[0], int(fields[19])


def _is_flower_process(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    stat = _stat(pid)
    return stat is not None and stat[1] != "Z" and b"flower-super" in cmdline


def _descendants(root: int) -> dict[int, int]:
    """{PID: start time} of the living descendants of ``root`` (SuperExec, ServerApp and
    ClientApp processes): they outlive their parent by a few seconds."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) and stat[1] != "Z":
            children.setdefault(stat[0], []).append(int(entry.name))
    found: dict[int, int] = {}
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found and (stat := _stat(child)):
                found[child] = stat[2]
                stack.append(child)
    return found


def stop(dirpath: Path, timeout: float = 15) -> list[int]:
    """SIGTERM every process recorded in ``<dir>/pids`` that is still a Flower process,
    SuperNodes first, then wait for them and their descendants; SIGKILL (by PID, same start
    time) what is left after ``timeout``. Returns the PIDs signalled."""
    files = sorted((dirpath / "pids").glob("*.pid"), key=lambda p: p.name.startswith("superlink"))
    tracked: dict[int, int] = {}
    pids = []
    for file in files:
        try:
            pid = int(file.read_text().strip())
        except (OSError, ValueError):
            continue
        if _is_flower_process(pid) and (stat := _stat(pid)):
            tracked.update({pid: stat[2], **_descendants(pid)})
            os.kill(pid, signal.SIGTERM)
            pids.append(pid)
        file.unlink(missing_ok=True)

    def living() -> list[int]:
        return [p for p, start in tracked.items() if (st := _stat(p)) and st[1] != "Z" and st[2] == start]

    deadline = time.monotonic() + timeout
    while living() and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in living():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


def _exec(cmd: list[str], env: dict[str, str], pid_file: Path, dry_run: bool) -> int:
    if dry_run:
        print(shlex.join(cmd))
        return 0
    try:
        pid_file.parent.mkdir(parents=True, exist_ok=True)
        pid_file.write_text(f"{os.getpid()}\n")  # exec keeps the PID
    except OSError as err:  # e.g. a read-only folder in a container: `stop` is not needed there
        print(f"deploy: no PID file ({err})", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(cmd[0], cmd, env)
    return 1  # not reached


# --------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default=None,
                        help="deployment folder written by make_certs.py "
                             f"(default $MIXUPFL_DEPLOY_DIR or {DEFAULT_DIR})")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("superlink", help="start flower-superlink (TLS + SuperNode auth)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 in Docker)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="Fleet/Control/Runtime HTTPS port")
    p.add_argument("--database", type=Path, default=None, help="default <dir>/state/superlink.db")
    p.add_argument("--log-file", type=Path, default=None)
    p.add_argument("--dry-run", action="store_true")

    p = sub.add_parser("supernode", help="start flower-supernode for one partition")
    p.add_argument("--index", type=int, required=True, help="partition-id (and key supernode-<index>)")
    p.add_argument("--num-partitions", type=int, required=True)
    p.add_argument("--superlink", default=f"127.0.0.1:{DEFAULT_PORT}", help="SuperLink host:port")
    p.add_argument("--key", type=Path, default=None, help="default <dir>/keys/supernode-<index>")
    p.add_argument("--runtime-host", default="127.0.0.1")
    p.add_argument("--runtime-port", type=int, default=None,
                   help=f"local Runtime API port (default {DEFAULT_RUNTIME_PORT} + index)")
    p.add_argument("--max-wait-time", type=float, default=None,
                   help="give up connecting to the SuperLink after this many seconds")
    p.add_argument("--node-config", default="require-secure-rng=true",
                   help="more node-config entries, space-separated key=value (default: require-secure-rng=true; "
                   "the ClientApp then refuses runs without secure-rng = true)")
    p.add_argument("--dry-run", action="store_true")

    p = sub.add_parser("federation", help="write [superlink.<name>] into $FLWR_HOME/config.toml")
    p.add_argument("--name", default=DEFAULT_FEDERATION)
    p.add_argument("--address", default=f"127.0.0.1:{DEFAULT_PORT}", help="SuperLink host:port")
    p.add_argument("--root-cert", type=Path, default=None, help="default <dir>/certs/ca.crt")
    p.add_argument("--default", action="store_true", help="also make it the default connection")

    p = sub.add_parser("register", help="register SuperNode public keys with the SuperLink")
    p.add_argument("keys", nargs="*", type=Path, help="public keys (default <dir>/keys/*.pub)")
    p.add_argument("--federation", default=DEFAULT_FEDERATION)

    p = sub.add_parser("nodes", help="list the SuperNodes the SuperLink knows")
    p.add_argument("--federation", default=DEFAULT_FEDERATION)
    p.add_argument("--wait", type=int, default=None, metavar="N", help="block until N are online")
    p.add_argument("--timeout", type=float, default=120)

    p = sub.add_parser("stop", help="stop the SuperLink and SuperNodes started from this folder")
    p.add_argument("--timeout", type=float, default=15)

    sub.add_parser("env", help="print export lines for the flwr environment")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    dirpath = deploy_dir(args.dir)
    env = flower_env(dirpath)
    if args.command != "env":
        Path(env["FLWR_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)

    if args.command == "superlink":
        cmd = superlink_command(dirpath, host=args.host, port=args.port, database=args.database,
                                log_file=args.log_file, env=env)
        return _exec(cmd, env, _pid_file(dirpath, "superlink"), args.dry_run)
    if args.command == "supernode":
        cmd = supernode_command(dirpath, index=args.index, num_partitions=args.num_partitions,
                                superlink=args.superlink, key=args.key, runtime_host=args.runtime_host,
                                runtime_port=args.runtime_port, max_wait_time=args.max_wait_time,
                                node_config=args.node_config, env=env)
        return _exec(cmd, env, _pid_file(dirpath, f"supernode-{args.index}"), args.dry_run)
    if args.command == "federation":
        path = write_federation(Path(env["FLWR_HOME"]), name=args.name, address=args.address,
                                root_cert=args.root_cert or _require(dirpath / "certs" / "ca.crt", "CA certificate"),
                                make_default=args.default)
        print(f"SuperLink connection '{args.name}' -> {args.address} written to {path}")
        return 0
    if args.command == "register":
        keys = args.keys or sorted((dirpath / "keys").glob("*.pub"))
        if not keys:
            raise SystemExit(f"deploy: no public keys given and none in {dirpath / 'keys'}")
        for key in keys:
            print(f"{key.name}: {register_key(key, federation=args.federation, env=env)}")
        return 0
    if args.command == "nodes":
        if args.wait is not None:
            nodes = wait_for_online(args.wait, federation=args.federation, env=env, timeout=args.timeout)
        else:
            nodes = list_nodes(federation=args.federation, env=env)
        for node in nodes:
            print(f"{node['node-id']:>22}  {node['status']}")
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
