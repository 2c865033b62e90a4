"""A real Flower 1.41 deployment on 127.0.0.1, driven by ``docker/make_certs.py`` and
``docker/deploy.py`` (the scripts ``docker/compose.yaml`` runs): a SuperLink with TLS and
SuperNode authentication, three registered SuperNodes, ``flwr run`` to completion; a fourth
SuperNode with valid TLS but an unregistered key is refused; nothing is left running.

Ports are free ports found at runtime, FLWR_HOME and every file live under pytest's tmp
folder; every process started here (and its descendants: SuperExec, ServerApp, ClientApp
processes) is stopped in the fixture's finalizer, also when a test fails.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
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
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process tracking reads Linux /proc"),
]

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "docker" / "deploy.py"
PARTIES = 3
FEDERATION = "deploy-test"


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

    def stop_all(self, timeout: float = 20) -> None:
        self.snapshot()
        # SuperNodes first, the SuperLink last (its SuperExec watches its PID).
        order = sorted(self.started.items(), key=lambda item: item[0] == "superlink")
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
        for pid in self.living():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)


def _wait_for_tls(port: int, cafile: Path, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    """Until the SuperLink answers a TLS handshake verified with our CA on 127.0.0.1."""
    context = ssl.create_default_context(cafile=str(cafile))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"SuperLink exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
                with context.wrap_socket(raw, server_hostname="127.0.0.1"):
                    return
        except (OSError, ssl.SSLError):
            time.sleep(0.3)
    pytest.fail(f"SuperLink not serving TLS on {port} after {timeout} s:\n{log.read_text()[-3000:]}")


# ----------------------------------------------------------------------------- fixture

@contextlib.contextmanager
def _deployment(base: Path, *, keys: int, node_configs: list[str], extra_env: dict[str, str] | None = None):
    """A TLS + SuperNode-auth SuperLink with ``len(node_configs)`` registered, online
    SuperNodes (node i gets ``node_configs[i]``) and ``keys`` key pairs in all (the rest are
    unregistered). Everything started is stopped on exit, and checked to be gone."""
    folder = base / "deploy"
    make_certs.generate(folder, supernodes=keys, hostnames=["superlink"])
    env = deploy.flower_env(folder, base={**os.environ, "FLWR_HOME": str(base / "flwr-home"), **(extra_env or {})})
    port = _free_port()
    procs = Processes()
    logs = base / "logs"
    logs.mkdir()
    nodes = len(node_configs)
    info = {"dir": folder, "env": env, "port": port, "procs": procs, "logs": logs, "base": base}
    try:
        superlink = procs.start("superlink", ["--dir", str(folder), "superlink", "--port", str(port)],
                                env, logs / "superlink.log")
        _wait_for_tls(port, folder / "certs" / "ca.crt", superlink, logs / "superlink.log")
        deploy.write_federation(Path(env["FLWR_HOME"]), name=FEDERATION, address=f"127.0.0.1:{port}",
                                root_cert=folder / "certs" / "ca.crt")
        for i in range(nodes):
            deploy.register_key(folder / "keys" / f"supernode-{i}.pub", federation=FEDERATION, env=env)
        registered = deploy.list_nodes(federation=FEDERATION, env=env)
        assert [n["status"] for n in registered] == ["registered"] * nodes, registered
        info["node_ids"] = {n["node-id"] for n in registered}
        for i, node_config in enumerate(node_configs):
            procs.start(f"supernode-{i}", [
                "--dir", str(folder), "supernode", "--index", str(i), "--num-partitions", str(nodes),
                "--superlink", f"127.0.0.1:{port}", "--runtime-port", str(_free_port()),
                "--node-config", node_config,
            ], env, logs / f"supernode-{i}.log")
        deploy.wait_for_online(nodes, federation=FEDERATION, env=env, timeout=90)
        procs.snapshot()
        yield info
    finally:
        procs.stop_all()
        living = procs.living()
        assert living == [], f"processes still running after cleanup: {living}"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    # One key pair more than registered: supernode-3 is the intruder.
    with _deployment(tmp_path_factory.mktemp("deployment"), keys=PARTIES + 1,
                     node_configs=["require-secure-rng=true"] * PARTIES) as info:
        yield info


def _flwr_run(info, run_config: str, *, timeout: float = 300, app_dir: Path = ROOT) -> tuple[int, str]:
    """``flwr run <app> <federation> --stream`` against the deployment; its exit code and log."""
    log = info["logs"] / "flwr-run.log"
    cmd = [deploy.executable("flwr", info["env"]), "run", str(app_dir), FEDERATION, "--stream",
           "--run-config", run_config]
    with log.open("w") as handle:
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
    return (info["logs"] / f"{name}.log").read_text(errors="replace")


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
    assert f"127.0.0.1:{deployment['port']}" in text
    assert "Uvicorn running on https://" in _log(deployment, "superlink")
    for i in range(PARTIES):
        assert "SuperNode ID:" in _log(deployment, f"supernode-{i}")


@pytest.mark.timeout(120)
def test_unregistered_supernode_is_refused(deployment):
    """Valid TLS (trusts the CA) and a well-formed key pair, but the public key was never
    registered: the SuperLink refuses activation and the SuperNode exits (process status 1,
    Flower's exit code 305 in its log)."""
    procs, env, folder = deployment["procs"], deployment["env"], deployment["dir"]
    intruder = procs.start("supernode-3", [
        "--dir", str(folder), "supernode", "--index", "3", "--num-partitions", str(PARTIES + 1),
        "--superlink", f"127.0.0.1:{deployment['port']}", "--runtime-port", str(_free_port()),
    ], env, deployment["logs"] / "supernode-3.log")
    try:
        code = intruder.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"unregistered SuperNode still running after 60 s:\n{_log(deployment, 'supernode-3')[-3000:]}")
    text = _log(deployment, "supernode-3")
    assert code != 0, text[-3000:]
    assert "Exit Code: 305" in text  # ExitCode.SUPERNODE_CONNECTION_ERROR
    assert "Failed to activate SuperNode" in text
    assert "SuperNode ID:" not in text
    assert "No SuperNode found with the given public key" in _log(deployment, "superlink")
    # The SuperLink still knows exactly the three registered nodes, all online.
    nodes = deploy.list_nodes(federation=FEDERATION, env=env)
    assert {n["node-id"] for n in nodes} == deployment["node_ids"]
    assert all(n["status"] == "online" for n in nodes), nodes


def test_deployment_folder_stays_out_of_the_app_bundle():
    """`flwr run .` bundles the repository by Flower's rules (its include patterns and the
    root .gitignore): nothing the deployment writes under docker/deploy/ (keys, FLWR_HOME
    with installed app copies, state) may end up in the FAB shipped to every node."""
    from flwr.cli.utils import filter_paths_for_publish

    inside = [
        "certs/ca.key", "certs/server.key", "certs/server.crt", "keys/supernode-0", "keys/supernode-0.pub",
        "state/superlink.db", "pids/superlink.pid", ".flwr/config.toml",
        ".flwr/apps/mixupfl.mixupfl.0.1.0.abcd1234/server/app.py",
    ]
    files = {".gitignore": (ROOT / ".gitignore").read_bytes(), "pyproject.toml": b"", "server/app.py": b""}
    files.update({f"docker/deploy/{path}": b"" for path in inside})
    kept = filter_paths_for_publish(files)
    assert "server/app.py" in kept
    assert [path for path in kept if path.startswith("docker/deploy/")] == []
    assert Path(deploy.flower_env(Path("/x/docker/deploy"), base={})["FLWR_HOME"]) == Path("/x/docker/deploy/.flwr")


def test_compose_runs_the_tested_launcher_with_what_it_needs_mounted(tmp_path, monkeypatch, capsys):
    """Docker cannot run here: check instead that every compose service runs deploy.py with
    arguments it accepts, and that the files those commands open are mounted (the dry run
    fails on a missing one), and that the server certificate names the compose hostname."""
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "home"))
    services = compose["services"]
    assert set(services) == {"superlink", *(f"supernode-{i}" for i in range(PARTIES))}
    for name, service in services.items():
        root = tmp_path / name
        for volume in service["volumes"]:
            host, container = volume.split(":")[:2]
            if container.startswith("/deploy/certs/") or container.startswith("/deploy/keys/"):
                target = root / container.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text("")
        assert deploy.main(["--dir", str(root / "deploy"), *service["command"], "--dry-run"]) == 0
        printed = capsys.readouterr().out
        if name == "superlink":
            assert "--enable-supernode-auth" in printed and "--host 0.0.0.0" in printed
            assert service["hostname"] == "superlink"
        else:
            index = int(name.rsplit("-", 1)[1])
            assert f"partition-id={index} num-partitions={PARTIES}" in printed
            assert "--superlink superlink:9093" in printed
    from cryptography import x509

    folder = tmp_path / "certs-check"
    make_certs.generate(folder, supernodes=0)
    cert = x509.load_pem_x509_certificate((folder / "certs" / "server.crt").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "superlink" in names.get_values_for_type(x509.DNSName)


@pytest.mark.timeout(120)
def test_stop_leaves_nothing_running(deployment):
    procs = deployment["procs"]
    procs.snapshot()
    assert len(procs.living()) >= 1 + PARTIES  # SuperLink, SuperNodes and their SuperExecs
    stopper = subprocess.Popen([sys.executable, str(DEPLOY), "--dir", str(deployment["dir"]), "stop"],
                               env=deployment["env"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # Reap our children while `stop` waits: a SuperExec watches its parent's PID, and an
    # unreaped (zombie) parent still looks alive to it.
    deadline = time.monotonic() + 60
    while stopper.poll() is None and time.monotonic() < deadline:
        for proc in procs.started.values():
            proc.poll()
        time.sleep(0.1)
    output = stopper.communicate(timeout=10)[0]
    assert stopper.returncode == 0, output
    assert output.startswith(f"stopped {1 + PARTIES} process(es)"), output
    for proc in procs.started.values():
        proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while procs.living() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert procs.living() == []


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
    with _deployment(base, keys=4, node_configs=configs) as info:
        info["app"] = app_with_components(base / "app", clientapp="tests.fault_injection:app")
        yield info


@pytest.mark.timeout(360)
def test_malformed_upload_is_rejected_and_a_silent_party_tolerated_under_quorum(faulty_deployment):
    out = faulty_deployment["base"] / "runs"
    code, text = _flwr_run(faulty_deployment, "central-epochs=3 secure-rng=true expected-parties=4 quorum=2 "
                                              f"round-timeout=30.0 output-dir='{out}' run-name='faulty'",
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
    assert len(summary["failures"]) == 1 and "no reply within 30 s" in summary["failures"][0]["error"]
    assert len(summary["participation"]["not_contributing_nodes"]) == 2
