"""A real Flower 1.42 deployment on 127.0.0.1, driven by ``docker/make_certs.py`` and
``docker/deploy.py`` (the scripts ``docker/compose.yaml`` runs): a SuperLink with TLS and
SuperNode authentication on loopback, the nginx proxy in front of it (when nginx is
installed), three registered SuperNodes connecting through the proxy, ``flwr run`` to
completion through the proxy's admin address; a fourth SuperNode with valid TLS but an
unregistered key is refused; the proxy passes nothing but the Fleet API to the parties;
register / unregister / reconcile; ``stop`` (SuperNodes first, a killed node's stale entry
cleared) and a restart that brings every node back; nothing is left running.

Ports are free ports found at runtime, FLWR_HOME and every file live under pytest's tmp
folder; every process started here (and its descendants: SuperExec, ServerApp, ClientApp
processes, nginx workers) is stopped in the fixture's finalizer, also when a test fails.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.xdist_group("deployment"),  # module fixtures and ordered tests: one worker, in order
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process tracking reads Linux /proc"),
]

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "docker" / "deploy.py"
PARTIES = 3
FEDERATION = "deploy-test"  # the operator's connection: the proxy's admin address (or the SuperLink)
PARTIES_CONNECTION = "parties-test"  # the same CA, pointed at the parties' address
NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_certs = _load("mixupfl_make_certs", ROOT / "docker" / "make_certs.py")
deploy = _load("mixupfl_deploy", DEPLOY)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ----------------------------------------------------------------------------- processes

def _proc_stat(pid: int) -> tuple[int, str, int] | None:
    """(ppid, state, start time) of ``pid`` from /proc, None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[0], int(fields[19])


def _alive(pid: int, start: int) -> bool:
    """Running (not a zombie) and still the same process (same start time)."""
    stat = _proc_stat(pid)
    return stat is not None and stat[1] != "Z" and stat[2] == start


def _descendants(root: int) -> dict[int, int]:
    """{pid: start time} of the living descendants of ``root``."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _proc_stat(int(entry.name))) is not None and stat[1] != "Z":
            children.setdefault(stat[0], []).append(int(entry.name))
    found: dict[int, int] = {}
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found and (stat := _proc_stat(child)) is not None:
                found[child] = stat[2]
                stack.append(child)
    return found


def _kill(pids: list[int]) -> None:
    """SIGKILL each of ``pids`` (one already gone is skipped)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class Processes:
    """Every process this module starts, stopped by PID (never by name)."""

    def __init__(self) -> None:
        self.started: dict[str, subprocess.Popen] = {}
        self.seen: dict[int, int] = {}  # pid -> start time, roots and descendants

    def start(self, name: str, args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
        with log.open("w") as handle:
            proc = subprocess.Popen(
                [sys.executable, str(DEPLOY), *args], env=env, cwd=ROOT, stdout=handle,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        self.started[name] = proc
        if (stat := _proc_stat(proc.pid)) is not None:
            self.seen[proc.pid] = stat[2]
        return proc

    def snapshot(self) -> None:
        """Remember the current descendants too (they are reparented once a parent dies)."""
        for proc in self.started.values():
            if proc.poll() is None:
                self.seen.update(_descendants(proc.pid))

    def living(self) -> list[int]:
        return [pid for pid, start in self.seen.items() if _alive(pid, start)]

    def stop_all(self, timeout: float = 20, *, kill_first: tuple[str, ...] = ()) -> None:
        """SIGTERM every process in order and wait; ``kill_first``: names killed outright with
        their descendants before that (a hung party's ClientApp would hold the grace period)."""
        self.snapshot()
        for name in kill_first:
            proc = self.started.get(name)
            if proc is not None and proc.poll() is None:
                _kill([proc.pid, *_descendants(proc.pid)])
                proc.wait(timeout=10)
        # SuperNodes first, then the SuperLink (its SuperExec watches its PID), the proxy last.
        order = sorted(self.started.items(), key=lambda item: {"superlink": 1, "proxy": 2}.get(item[0], 0))
        for _, proc in order:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for _, proc in order:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        # Descendants (SuperExec, flwr-serverapp / flwr-clientapp) end with their parents;
        # anything still there after a grace period is killed by PID.
        while self.living() and time.monotonic() < deadline + 10:
            time.sleep(0.2)
        _kill(self.living())
        time.sleep(0.5)


def _wait_for_tls(port: int, cafile: Path, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    """Until the SuperLink (or the proxy) answers a TLS handshake verified with our CA on
    127.0.0.1."""
    context = ssl.create_default_context(cafile=str(cafile))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{log.stem} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
                with context.wrap_socket(raw, server_hostname="127.0.0.1"):
                    return
        except (OSError, ssl.SSLError):
            time.sleep(0.3)
    pytest.fail(f"{log.stem} not serving TLS on {port} after {timeout} s:\n{log.read_text()[-3000:]}")


# ----------------------------------------------------------------------------- fixture

def _start_link(info: dict) -> None:
    """The SuperLink on loopback and, with nginx, the proxy in front of it (the ports in
    ``info``), through the launcher; returns once both serve TLS."""
    folder, env, procs, logs = info["dir"], info["env"], info["procs"], info["logs"]
    run = info.setdefault("starts", 0) + 1
    info["starts"] = run
    superlink = procs.start("superlink", ["--dir", str(folder), "superlink", "--port", str(info["port"])],
                            env, logs / f"superlink-{run}.log")
    _wait_for_tls(info["port"], folder / "certs" / "ca.crt", superlink, logs / f"superlink-{run}.log")
    if info["proxied"]:
        proxy = procs.start("proxy", [
            "--dir", str(folder), "proxy", "--listen", f"127.0.0.1:{info['parties_port']}",
            "--admin", f"127.0.0.1:{info['admin_port']}", "--superlink", f"127.0.0.1:{info['port']}",
        ], env, logs / f"proxy-{run}.log")
        _wait_for_tls(info["parties_port"], folder / "certs" / "ca.crt", proxy, logs / f"proxy-{run}.log")
        _wait_for_tls(info["admin_port"], folder / "certs" / "ca.crt", proxy, logs / f"proxy-{run}.log")


def _start_node(info: dict, index: int, *, node_config: str = "require-secure-rng=true", name: str | None = None,
                key: Path | None = None, extra: list[str] | None = None) -> subprocess.Popen:
    """SuperNode ``index`` through the launcher, connecting to the proxy's parties' address
    (or the SuperLink when nginx is missing); its log is ``<name>-<start>.log``."""
    name = name or f"supernode-{index}"
    args = ["--dir", str(info["dir"]), "supernode", "--index", str(index), "--num-partitions",
            str(info["partitions"]), "--superlink", info["fleet_address"], "--runtime-port", str(_free_port()),
            "--node-config", node_config, "--federation", FEDERATION, *(extra or [])]
    if key is not None:
        args += ["--key", str(key)]
    log = info["logs"] / f"{name}-{info['starts']}.log"
    info.setdefault("node_logs", {})[name] = log
    return info["procs"].start(name, args, info["env"], log)


@contextlib.contextmanager
def _deployment(base: Path, *, keys: int, node_configs: list[str], extra_env: dict[str, str] | None = None,
                hung: tuple[str, ...] = ()):
    """A TLS + SuperNode-auth SuperLink on loopback behind the nginx proxy (when nginx is
    installed) with ``len(node_configs)`` registered, live SuperNodes connected through the
    proxy (node i gets ``node_configs[i]``) and ``keys`` key pairs in all (the rest are
    unregistered). Everything started is stopped on exit, and checked to be gone; the
    SuperNodes named in ``hung`` are killed first (their ClientApp may still be asleep)."""
    folder = base / "deploy"
    make_certs.generate(folder, supernodes=keys, hostnames=["superlink"])
    env = deploy.flower_env(folder, base={**os.environ, "FLWR_HOME": str(base / "flwr-home"), **(extra_env or {})})
    procs = Processes()
    logs = base / "logs"
    logs.mkdir()
    nodes = len(node_configs)
    info = {"dir": folder, "env": env, "port": _free_port(), "procs": procs, "logs": logs, "base": base,
            "proxied": NGINX is not None, "partitions": nodes}
    if info["proxied"]:
        info.update(parties_port=_free_port(), admin_port=_free_port())
        info["fleet_address"] = f"127.0.0.1:{info['parties_port']}"
        operator = f"127.0.0.1:{info['admin_port']}"
    else:
        info["fleet_address"] = operator = f"127.0.0.1:{info['port']}"
    try:
        _start_link(info)
        home, ca = Path(env["FLWR_HOME"]), folder / "certs" / "ca.crt"
        deploy.write_federation(home, name=FEDERATION, address=operator, root_cert=ca)
        deploy.write_federation(home, name=PARTIES_CONNECTION, address=info["fleet_address"], root_cert=ca)
        for i in range(nodes):
            deploy.register_key(folder / "keys" / f"supernode-{i}.pub", federation=FEDERATION, env=env)
        registered = deploy.list_nodes(federation=FEDERATION, env=env)
        assert [n["status"] for n in registered] == ["registered"] * nodes, registered
        info["node_ids"] = {n["node-id"] for n in registered}
        for i, node_config in enumerate(node_configs):
            _start_node(info, i, node_config=node_config)
        deploy.wait_for_online(nodes, federation=FEDERATION, env=env, timeout=90)
        procs.snapshot()
        yield info
    finally:
        procs.stop_all(kill_first=hung)
        living = procs.living()
        assert living == [], f"processes still running after cleanup: {living}"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    # One key pair more than registered: supernode-3 is the intruder.
    with _deployment(tmp_path_factory.mktemp("deployment"), keys=PARTIES + 1,
                     node_configs=["require-secure-rng=true"] * PARTIES) as info:
        yield info


def _flwr_run(info, run_config: str, *, timeout: float = 300, app_dir: Path | None = None) -> tuple[int, str]:
    """``flwr run <app> <federation> --stream`` against the deployment; its exit code and log.
    Without ``app_dir``, this project's app as ``mixupfl run`` sends it (a staged copy)."""
    from simulations.cli import app_to_send

    log = info["logs"] / "flwr-run.log"
    sent = contextlib.nullcontext(app_dir) if app_dir is not None else app_to_send(ROOT)
    with sent as app, log.open("w") as handle:
        cmd = [deploy.executable("flwr", info["env"]), "run", str(app), FEDERATION, "--stream",
               "--run-config", run_config]
        proc = subprocess.Popen(cmd, env=info["env"], cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        info["procs"].started["flwr-run"] = proc
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            info["procs"].snapshot()
            pytest.fail(f"flwr run did not finish in {timeout:.0f} s:\n{log.read_text()[-3000:]}")
    return code, log.read_text(errors="replace")


def _log(info, name: str) -> str:
    """The log of the latest process called ``name`` (superlink, proxy, supernode-<i>, ...)."""
    path = info.get("node_logs", {}).get(name) or info["logs"] / f"{name}-{info['starts']}.log"
    return path.read_text(errors="replace")


# ----------------------------------------------------------------------------- tests

@pytest.mark.timeout(360)
def test_tls_authenticated_deployment_runs_one_shot_to_completion(deployment):
    out = deployment["base"] / "runs"
    code, text = _flwr_run(deployment, f"central-epochs=3 secure-rng=true expected-parties={PARTIES} "
                                       f"output-dir='{out}' run-name='deploy'")
    assert code == 0, text[-3000:]
    summary = json.loads((out / "deploy.json").read_text())
    assert summary["num_parties"] == PARTIES
    assert summary["strategy"] == "one-shot-mixup"
    assert sorted(p["partition-id"] for p in summary["parties"]) == list(range(PARTIES))
    assert summary["privacy"]["mixing_randomness"].startswith("operating-system CSPRNG")
    assert summary["rejections"] == [] and summary["failures"] == []
    # The connection went through TLS (https) with our CA, and the run used the SuperLink's
    # authenticated nodes only.
    assert f"127.0.0.1:{deployment['admin_port'] if deployment['proxied'] else deployment['port']}" in text
    assert f"Uvicorn running on https://127.0.0.1:{deployment['port']}" in _log(deployment, "superlink")
    for i in range(PARTIES):
        assert "SuperNode ID:" in _log(deployment, f"supernode-{i}")
    if deployment["proxied"]:  # ... and everything passed through the proxy
        access = (deployment["dir"] / "proxy" / "logs" / "access.log").read_text()
        for path in ("/v1/fleet/activate-node", "/v1/fleet/pull-messages", "/v1/fleet/push-messages",
                     "/v1/control/start-run", "/v1/control/stream-logs"):
            assert f"POST {path} HTTP/1.1\" 200" in access, path


@pytest.mark.timeout(120)
def test_unregistered_supernode_is_refused(deployment):
    """Valid TLS (trusts the CA) and a well-formed key pair, but the public key was never
    registered: the SuperLink refuses activation and the SuperNode exits (process status 1,
    Flower's exit code 305 in its log)."""
    deployment["partitions"] = PARTIES + 1
    try:
        intruder = _start_node(deployment, 3, node_config="", name="intruder")
    finally:
        deployment["partitions"] = PARTIES
    try:
        code = intruder.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"unregistered SuperNode still running after 60 s:\n{_log(deployment, 'intruder')[-3000:]}")
    text = _log(deployment, "intruder")
    assert code != 0, text[-3000:]
    assert "Exit Code: 305" in text  # ExitCode.SUPERNODE_CONNECTION_ERROR
    assert "Failed to activate SuperNode" in text
    assert "SuperNode ID:" not in text
    assert "No SuperNode found with the given public key" in _log(deployment, "superlink")
    # The SuperLink still knows exactly the three registered nodes, all online.
    nodes = deploy.list_nodes(federation=FEDERATION, env=deployment["env"])
    assert {n["node-id"] for n in nodes} == deployment["node_ids"]
    assert all(n["status"] == "online" for n in nodes), nodes


def _https_status(port: int, path: str, cafile: Path, method: str = "POST", length: int | None = None) -> int:
    """Status of one raw HTTPS request (the path sent exactly as given; ``length``: announce
    a body of that size and send none)."""
    import http.client

    context = ssl.create_default_context(cafile=str(cafile))
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    headers = {"content-type": "application/protobuf"}
    if length is not None:
        headers["content-length"] = str(length)
    try:
        connection.request(method, path, body=b"" if method == "POST" and length is None else None,
                           headers=headers)
        return connection.getresponse().status
    finally:
        connection.close()


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket listening on ``port`` (/proc/net/tcp, tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hexport = local.rsplit(":", 1)
            if state == "0A" and int(hexport, 16) == port:
                found.add(address)
    return found


@pytest.mark.timeout(120)
def test_proxy_passes_the_fleet_api_only_to_the_parties(deployment):
    """The SuperLink listens on loopback only; the parties' address passes POST
    /v1/fleet/<method> and nothing else (the SuperNodes registered and ran through it, see
    the test above); the Control API answers on the admin address only."""
    if not deployment["proxied"]:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx)")
    ca, env = deployment["dir"] / "certs" / "ca.crt", deployment["env"]
    parties, admin = deployment["parties_port"], deployment["admin_port"]
    assert _listening_addresses(deployment["port"]) == {"0100007F"}  # 127.0.0.1 only
    refused = {
        "/v1/control/list-nodes": 403, "/v1/control/register-node": 403, "/v1/control/start-run": 403,
        "/v1/control/stream-logs": 403, "/v1/runtime/acquire-task": 403, "/v1/fleet/../control/list-nodes": 403,
        "/v1/fleet/%2e%2e/control/list-nodes": 403, "/v1/fleet/..%2fcontrol/list-nodes": 403,
        "/v1/fleet/get-run?x=/v1/control/": 403, "/v1/fleet/Get-Run": 403, "//v1/control/list-nodes": 403,
        "/docs": 403, "/openapi.json": 403, "/": 403,
    }
    assert {path: _https_status(parties, path, ca) for path in refused} == refused
    assert _https_status(parties, "/v1/fleet/get-run", ca, method="GET") == 405
    # A Fleet call does reach the SuperLink, which refuses it without a node's signature;
    # an oversized body never does.
    assert _https_status(parties, "/v1/fleet/get-run", ca) == 401
    assert _https_status(parties, "/v1/fleet/push-object", ca, length=65 * 2**20) == 413
    # The admin address: the Control API only.
    assert _https_status(admin, "/v1/fleet/get-run", ca) == 403
    assert _https_status(admin, "/v1/runtime/acquire-task", ca) == 403
    assert _https_status(admin, "/docs", ca, method="GET") == 403
    assert len(deploy.list_nodes(federation=FEDERATION, env=env)) >= PARTIES
    # Flower's own CLI through the parties' address: no node list, no Sybil registration.
    sybil = make_certs.make_node_keys(deployment["base"] / "sybil-via-parties", "sybil")[1]
    flwr = deploy.executable("flwr", env)
    for args in (["supernode", "list", PARTIES_CONNECTION], ["supernode", "register", str(sybil), PARTIES_CONNECTION],
                 ["ls", PARTIES_CONNECTION]):
        proc = subprocess.run([flwr, *args], env=env, capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode != 0 and "403" in proc.stdout + proc.stderr, (args, proc.stdout, proc.stderr)
    with pytest.raises(deploy.control.ControlError, match="HTTP 403"):
        deploy.list_nodes(federation=PARTIES_CONNECTION, env=env)
    assert {n["node-id"] for n in deploy.list_nodes(federation=FEDERATION, env=env)} == deployment["node_ids"]


def _launcher(info, capsys, *args: str) -> tuple[int, str]:
    code = deploy.main(["--dir", str(info["dir"]), *args])
    return code, capsys.readouterr().out


@pytest.mark.timeout(180)
def test_register_unregister_reconcile(deployment, capsys, monkeypatch):
    """`register` tells registered / already registered / locked out apart; `unregister`
    removes a node (and Flower 1.42 then refuses its key for good); `reconcile` makes the
    registered keys equal keys/*.pub: it removes a Sybil node and adds a missing party."""
    monkeypatch.setenv("FLWR_HOME", deployment["env"]["FLWR_HOME"])
    fed = ["--federation", FEDERATION]
    sybil = make_certs.make_node_keys(deployment["base"] / "sybil", "sybil")[1]

    code, out = _launcher(deployment, capsys, "register", str(sybil), *fed)
    assert code == 0 and out.startswith("sybil: registered (node "), out
    code, out = _launcher(deployment, capsys, "register", str(sybil), *fed)
    assert code == 0 and out.startswith("sybil: already registered (node "), out
    sybil_id = out.split("(node ")[1].split(",")[0]

    before = deploy.list_nodes(federation=FEDERATION, env=deployment["env"])
    code, out = _launcher(deployment, capsys, "reconcile", "--dry-run", *fed)
    assert code == 0, out
    assert f"node {sybil_id} (sybil, registered): would unregister" in out
    assert "supernode-3: would register" in out
    assert deploy.list_nodes(federation=FEDERATION, env=deployment["env"]) == before

    code, out = _launcher(deployment, capsys, "reconcile", *fed)
    assert code == 0, out
    assert f"node {sybil_id} (sybil, registered): unregister" in out and "supernode-3: registered (node" in out
    code, out = _launcher(deployment, capsys, "reconcile", *fed)
    assert code == 0 and "in sync" in out, out

    code, out = _launcher(deployment, capsys, "unregister", "supernode-3", *fed)
    assert code == 0 and "supernode-3: unregistered node" in out, out
    code, out = _launcher(deployment, capsys, "register", str(deployment["dir"] / "keys" / "supernode-3.pub"), *fed)
    assert code == 1 and "supernode-3: LOCKED OUT" in out and "registered (" not in out, out
    code, out = _launcher(deployment, capsys, "register", str(sybil), *fed)
    assert code == 1 and "sybil: LOCKED OUT" in out, out
    code, out = _launcher(deployment, capsys, "reconcile", *fed)
    assert code == 1 and "supernode-3: LOCKED OUT" in out and "): unregister" not in out, out
    code, out = _launcher(deployment, capsys, "unregister", "--node-id", "12345", *fed)
    assert code == 1 and "[code: 24]" in out, out  # NODE_NOT_FOUND

    nodes = {n["name"]: n["status"] for n in deploy.list_nodes(federation=FEDERATION, env=deployment["env"])}
    assert nodes["sybil"] == nodes["supernode-3"] == "unregistered", nodes
    records = deploy.wait_for_online(PARTIES, federation=FEDERATION, env=deployment["env"], timeout=10)
    assert sorted(r["live"] for r in records if r["live"])[0].startswith("PID "), records


@pytest.mark.timeout(180)
def test_stop_waits_for_the_supernodes_and_clears_a_killed_ones_entry(deployment):
    """`nodes --wait` does not count a killed SuperNode that the SuperLink still reports
    online; `stop` stops the SuperNodes first and waits for them (each deactivates itself),
    deactivates the killed one with its key, then stops the SuperLink and the proxy."""
    procs, env = deployment["procs"], deployment["env"]
    procs.snapshot()
    victim = procs.started["supernode-1"]
    victim.kill()
    victim.wait(timeout=10)
    nodes = {n["name"]: n["status"] for n in deploy.list_nodes(federation=FEDERATION, env=env)}
    assert nodes["supernode-1"] == "online", nodes  # stale: the process is gone
    with pytest.raises(TimeoutError, match="not live"):
        deploy.wait_for_online(PARTIES, federation=FEDERATION, env=env, timeout=3)

    stopper = subprocess.Popen([sys.executable, str(DEPLOY), "--dir", str(deployment["dir"]), "stop"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # Reap our children while `stop` waits: a SuperExec watches its parent's PID, and an
    # unreaped (zombie) parent still looks alive to it.
    deadline = time.monotonic() + 90
    while stopper.poll() is None and time.monotonic() < deadline:
        for proc in procs.started.values():
            proc.poll()
        time.sleep(0.1)
    output = stopper.communicate(timeout=10)[0]
    assert stopper.returncode == 0, output
    lines = output.splitlines()
    groups = [line.split()[1] for line in lines if line.startswith("stopped ") and " in " in line]
    assert groups == ["supernode", "superlink", "proxy"] if deployment["proxied"] else ["supernode", "superlink"]
    assert any(line.startswith("cleared the stale online entry of supernode-1 (node ") for line in lines), output
    assert lines[-1].startswith(f"stopped {PARTIES - 1 + 1 + deployment['proxied']} process(es)"), output
    link_log = _log(deployment, "superlink")
    shutdown = link_log.index("Shutting down")
    assert link_log.count("[Fleet.DeactivateNode] Deactivated node_id=", 0, shutdown) == PARTIES, link_log[-3000:]
    for proc in procs.started.values():
        proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while procs.living() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert procs.living() == []
    assert not list((deployment["dir"] / "pids").rglob("*.pid"))


@pytest.mark.timeout(240)
def test_restart_after_stop_brings_every_node_back(deployment, capsys, monkeypatch):
    """After `stop`, the same folder starts again and every SuperNode is accepted at once
    (no stale entry: `[code: 2004]`); PID files are keyed by node name, so a second node
    with the same index is tracked and stopped too, and a second start of a name is refused."""
    if deployment["procs"].living():
        pytest.skip("needs the stop test before it")
    info, env = deployment, deployment["env"]
    info["port"] = _free_port()
    if info["proxied"]:
        info.update(parties_port=_free_port(), admin_port=_free_port())
        info["fleet_address"] = f"127.0.0.1:{info['parties_port']}"
    _start_link(info)
    ca, home = info["dir"] / "certs" / "ca.crt", Path(env["FLWR_HOME"])
    operator = f"127.0.0.1:{info['admin_port'] if info['proxied'] else info['port']}"
    deploy.write_federation(home, name=FEDERATION, address=operator, root_cert=ca)
    statuses = {n["name"]: n["status"] for n in deploy.list_nodes(federation=FEDERATION, env=env)}
    assert [statuses[f"supernode-{i}"] for i in range(PARTIES)] == ["offline"] * PARTIES, statuses
    for i in range(PARTIES):  # --stale-wait 0: a stale entry would fail with [code: 2004]
        _start_node(info, i, extra=["--stale-wait", "0"])
    deploy.wait_for_online(PARTIES, federation=FEDERATION, env=env, timeout=90)
    for i in range(PARTIES):
        text = _log(info, f"supernode-{i}")
        assert "SuperNode ID:" in text and "[code: 2004]" not in text, text[-2000:]

    # A second SuperNode with index 0 (its own key): its PID file is keyed by its name.
    monkeypatch.setenv("FLWR_HOME", env["FLWR_HOME"])
    twin_key, twin_pub = make_certs.make_node_keys(info["base"] / "twin", "supernode-0-twin")
    code, out = _launcher(info, capsys, "register", str(twin_pub), "--federation", FEDERATION)
    assert code == 0, out
    _start_node(info, 0, name="supernode-0-twin", key=twin_key)
    deploy.wait_for_online(PARTIES + 1, federation=FEDERATION, env=env, timeout=90)
    names = sorted(p.stem for p in (info["dir"] / "pids" / "supernodes").glob("*.pid"))
    assert names == ["supernode-0", "supernode-0-twin", "supernode-1", "supernode-2"]
    again = subprocess.run([sys.executable, str(DEPLOY), "--dir", str(info["dir"]), "supernode", "--index", "0",
                            "--num-partitions", str(PARTIES), "--superlink", info["fleet_address"]],
                           env=env, capture_output=True, text=True, timeout=60, check=False)
    assert again.returncode == 1 and "SuperNode supernode-0 already runs" in again.stderr, again.stderr

    info["procs"].snapshot()
    stopper = subprocess.Popen([sys.executable, str(DEPLOY), "--dir", str(info["dir"]), "stop"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 90
    while stopper.poll() is None and time.monotonic() < deadline:
        for proc in info["procs"].started.values():
            proc.poll()
        time.sleep(0.1)
    output = stopper.communicate(timeout=10)[0]
    assert stopper.returncode == 0, output
    assert output.splitlines()[-1].startswith(f"stopped {PARTIES + 2 + info['proxied']} process(es)"), output
    assert "supernode-0-twin (PID" in output
    deadline = time.monotonic() + 30
    while info["procs"].living() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert info["procs"].living() == []


# ------------------------------------------------------------------ broken parties

FAULTY = {2: "test-fault='nan-upload'", 3: "test-fault='silent' test-fault-seconds=600.0"}


@pytest.fixture(scope="module")
def faulty_deployment(tmp_path_factory):
    """A second deployment of 4 SuperNodes: parties 0 and 1 behave, party 2 uploads NaNs,
    party 3 never answers. The faults are played by the test-only ClientApp
    (tests/fault_injection.py), installed by running a copy of the app that names it."""
    from app_variants import app_with_components

    configs = [f"require-secure-rng=true {FAULTY.get(i, '')}".strip() for i in range(4)]
    base = tmp_path_factory.mktemp("faulty")
    with _deployment(base, keys=4, node_configs=configs, hung=("supernode-3",)) as info:
        info["app"] = app_with_components(base / "app", clientapp="tests.fault_injection:app")
        yield info


@pytest.mark.timeout(360)
def test_malformed_upload_is_rejected_and_a_silent_party_tolerated_under_quorum(faulty_deployment):
    out = faulty_deployment["base"] / "runs"
    code, text = _flwr_run(faulty_deployment, "central-epochs=3 secure-rng=true expected-parties=4 quorum=2 "
                                              f"round-timeout=60.0 output-dir='{out}' run-name='faulty'",
                          app_dir=faulty_deployment["app"])
    assert code == 0, text[-3000:]
    summary = json.loads((out / "faulty.json").read_text())
    # The run completed on the two good parties ...
    assert sorted(summary["participation"]["contributed_partitions"]) == [0, 1]
    assert summary["union"]["train_rows"] == sum(p["num-examples"] for p in summary["parties"])
    # ... the NaN upload was rejected with its reason ...
    assert [r["partition-id"] for r in summary["rejections"]] == [2]
    assert "x holds NaN or inf" in summary["rejections"][0]["reason"]
    assert "rejected: x holds NaN" in text
    # ... and the silent party is listed as not answering.
    assert len(summary["failures"]) == 1 and "no reply within 60 s" in summary["failures"][0]["error"]
    assert len(summary["participation"]["not_contributing_nodes"]) == 2
