"""The deployment files without Docker or running Flower: compose.yaml and the Dockerfile
against the launcher (docker/deploy.py) they run, the pinned requirements, the nginx
configuration the launcher writes (checked by nginx itself when installed), PID files,
registration reconciliation and liveness rules, and what `flwr run .` would bundle."""

from __future__ import annotations

import importlib.util
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_certs = _load("mixupfl_make_certs", DOCKER / "make_certs.py")
deploy = _load("mixupfl_deploy", DOCKER / "deploy.py")
control, processes, proxy, liveness = deploy.control, deploy.processes, deploy.proxy, deploy.liveness_


def _compose() -> dict:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def _dockerfile_cmds() -> dict[str, list[str]]:
    """{target: CMD} of docker/Dockerfile (JSON-form CMDs)."""
    import json

    cmds, target = {}, None
    for line in (DOCKER / "Dockerfile").read_text().splitlines():
        if match := re.match(r"FROM \S+ AS (\S+)", line):
            target = match.group(1)
        elif line.startswith("CMD "):
            cmds[target] = json.loads(line[4:])
    return cmds


# ----------------------------------------------------------------------------- compose

def test_compose_runs_the_tested_launcher_with_what_it_needs_mounted(tmp_path, monkeypatch, capsys):
    """Docker cannot run here: every compose service runs deploy.py with arguments it
    accepts, the files those commands open are mounted (the dry run fails on a missing
    one), and the server certificate names the compose hostname."""
    compose = _compose()
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "home"))
    services = compose["services"]
    nodes = sorted(name for name in services if name.startswith("supernode-"))
    assert set(services) == {"superlink", "proxy", *nodes} and len(nodes) == 3
    for name, service in services.items():
        root = tmp_path / name
        for volume in service["volumes"]:
            container = volume.split(":")[1]
            if container.startswith(("/deploy/certs/", "/deploy/keys/")):
                target = root / container.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text("")
        assert deploy.main(["--dir", str(root / "deploy"), *service["command"], "--dry-run"]) == 0
        printed = capsys.readouterr().out
        if name == "superlink":
            assert "--enable-supernode-auth" in printed and "--host 127.0.0.1" in printed
        elif name == "proxy":
            assert "listen 0.0.0.0:9092 ssl;" in printed and "/v1/control/" not in printed.split("server {", 1)[1]
            assert "server 127.0.0.1:9093;" in printed
        else:
            index = int(name.rsplit("-", 1)[1])
            argv = shlex.split(printed)
            config = argv[argv.index("--node-config") + 1]
            assert config == f"partition-id={index} num-partitions=3 require-secure-rng=true data-path='/data'"
            assert argv[argv.index("--superlink") + 1] == "superlink:9092"
    from cryptography import x509

    folder = tmp_path / "certs-check"
    make_certs.generate(folder, supernodes=0)
    cert = x509.load_pem_x509_certificate((folder / "certs" / "server.crt").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "superlink" in names.get_values_for_type(x509.DNSName)


def _parse(command: list[str]):
    """The launcher's own parser on a compose/Dockerfile command: an unknown flag or a bad
    value fails here (argparse exits)."""
    return deploy.build_parser().parse_args(["--dir", "/deploy", *command])


def _defaults(subcommand: str):
    required = {"supernode": ["--index", "0", "--num-partitions", "1"]}.get(subcommand, [])
    return _parse([subcommand, *required])


def test_compose_flags_are_the_launchers_and_match_its_defaults():
    services = _compose()["services"]
    link, prox = _parse(services["superlink"]["command"]), _parse(services["proxy"]["command"])
    nodes = {name: _parse(s["command"]) for name, s in services.items() if name.startswith("supernode-")}
    # The SuperLink: loopback, the launcher's default port; nothing published.
    assert (link.host, link.port) == (_defaults("superlink").host, deploy.DEFAULT_PORT) == ("127.0.0.1", 9093)
    # The proxy forwards to exactly that address (the launcher's default too) and serves the
    # parties on the launcher's default parties' port; no admin address in compose.
    assert prox.superlink == f"{link.host}:{link.port}" == _defaults("proxy").superlink
    assert prox.listen == _defaults("proxy").listen == f"0.0.0.0:{deploy.DEFAULT_PROXY_PORT}"
    assert prox.admin == []
    # The proxy writes its configuration, logs and PID file under /deploy/proxy: writable.
    assert any(t.split(":")[0] == "/deploy/proxy" for t in services["proxy"]["tmpfs"])
    for name in ("superlink", "proxy"):
        assert services[name]["network_mode"] == "host" and "ports" not in services[name]
    parties_port = proxy.split_address(prox.listen)[1]
    for name, args in nodes.items():
        service = services[name]
        index = int(name.rsplit("-", 1)[1])
        assert (args.index, args.num_partitions) == (index, len(nodes))
        assert args.superlink == f"superlink:{parties_port}"
        assert proxy.split_address(args.superlink)[1] == proxy.split_address(_defaults("supernode").superlink)[1]
        assert args.key is None and args.name is None  # keys/supernode-<index>, its PID file name
        assert args.node_config == _defaults("supernode").node_config == "require-secure-rng=true"
        assert args.data_path == "/data"
        assert f"./deploy/data/supernode-{index}:/data:ro" in service["volumes"]
        keys = [v for v in service["volumes"] if ":/deploy/keys/" in v]
        assert keys == [f"./deploy/keys/supernode-{index}:/deploy/keys/supernode-{index}:ro"]
        assert service["extra_hosts"] == ["superlink:host-gateway"]
    for name, service in services.items():
        assert service["restart"] == "unless-stopped", name
        assert service["init"] is True, name


def test_dockerfile_targets_run_the_compose_commands():
    compose, cmds = _compose(), _dockerfile_cmds()
    services = compose["services"]
    assert cmds["superlink"] == services["superlink"]["command"]
    assert cmds["proxy"] == services["proxy"]["command"]
    assert cmds["supernode"] == services["supernode-0"]["command"]
    for target in ("superlink", "proxy", "supernode"):
        _parse(cmds[target])
        assert services[target if target != "supernode" else "supernode-0"]["build"]["target"] == target


def test_image_installs_pinned_flwr_without_simulation_and_every_launcher_file():
    from packaging.requirements import Requirement

    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert "-r /tmp/requirements-deploy.txt" in dockerfile and "pip check" in dockerfile
    assert "simulation" not in re.sub(r"#.*", "", dockerfile)
    pins = {}
    for line in (DOCKER / "requirements-deploy.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            req = Requirement(line)
            spec = list(req.specifier)
            assert len(spec) == 1 and spec[0].operator == "==" and not req.extras and not req.marker, line
            pins[req.name.lower()] = spec[0].version
    assert "ray" not in pins and not any(name.startswith(("nvidia-", "cuda-")) for name in pins)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for text in project:
        req = Requirement(text)
        assert req.name.lower() in pins, f"{req.name} is not pinned in requirements-deploy.txt"
        assert req.specifier.contains(pins[req.name.lower()], prereleases=True), (text, pins[req.name.lower()])
    # Everything deploy.py imports from docker/ is copied into the image and let through the
    # build context filter.
    modules = set(re.findall(r"^import (launcher_\w+)", (DOCKER / "deploy.py").read_text(), re.MULTILINE))
    modules |= set(re.findall(r"^import (launcher_\w+)", (DOCKER / "launcher_liveness.py").read_text(), re.MULTILINE))
    allowed = (DOCKER / "Dockerfile.dockerignore").read_text()
    for name in [f"{m}.py" for m in sorted(modules)] + ["deploy.py", "nginx.conf.template"]:
        assert f"docker/{name}" in dockerfile and f"!docker/{name}" in allowed, name
    assert "!docker/requirements-deploy.txt" in allowed and "docker/deploy/" not in allowed.replace("docker/deploy.py", "")


# ----------------------------------------------------------------------------- launcher

def test_superlink_stays_on_loopback_unless_told_otherwise(tmp_path):
    make_certs.generate(tmp_path, supernodes=1)
    with pytest.raises(SystemExit, match="would expose the Control API"):
        deploy.superlink_command(tmp_path, host="0.0.0.0")
    with pytest.raises(SystemExit, match="would expose the Control API"):
        deploy.main(["--dir", str(tmp_path), "superlink", "--host", "10.0.0.5", "--dry-run"])
    for host in ("127.0.0.1", "::1", "localhost"):
        cmd = deploy.superlink_command(tmp_path, host=host)
        assert cmd[cmd.index("--host") + 1] == host
    assert "0.0.0.0" in deploy.superlink_command(tmp_path, host="0.0.0.0", allow_public=True)


def test_supernode_node_config_names_its_data(tmp_path):
    make_certs.generate(tmp_path, supernodes=2)
    cmd = deploy.supernode_command(tmp_path, index=1, num_partitions=2, node_config="require-secure-rng=true",
                                   data_path="/data", data_format="npz")
    config = cmd[cmd.index("--node-config") + 1]
    assert config == "partition-id=1 num-partitions=2 require-secure-rng=true data-path='/data' data-format='npz'"
    with pytest.raises(SystemExit, match="no spaces or quotes"):
        deploy.supernode_command(tmp_path, index=0, num_partitions=2, data_path="/my data")
    assert (tmp_path / "data" / "supernode-1").is_dir()
    assert (tmp_path / "data" / "supernode-1").stat().st_mode & 0o777 == 0o700


def test_pid_files_are_keyed_by_node_name(tmp_path):
    assert processes.pid_file(tmp_path, "supernode", "supernode-0") == tmp_path / "pids/supernodes/supernode-0.pid"
    assert processes.pid_file(tmp_path, "superlink") == tmp_path / "pids/superlink.pid"
    assert processes.pid_file(tmp_path, "proxy") == tmp_path / "pids/proxy.pid"
    for bad in ("", "../x", "a b", "-x"):
        with pytest.raises(ValueError):
            processes.pid_file(tmp_path, "supernode", bad)
    path = processes.pid_file(tmp_path, "supernode", "twin")
    processes.write_pid_file(path, key=tmp_path / "keys" / "twin")
    pid, start = processes.read_pid_file(path)
    assert processes.alive(pid, start) and not processes.alive(pid, start + 1)
    assert processes.pid_file_key(path) == (tmp_path / "keys" / "twin").resolve()
    assert processes.role_of(["nginx: master process /usr/sbin/nginx -p /d/proxy/ -c /d/proxy/nginx.conf"]) == "proxy"
    assert processes.role_of(["nginx: worker process"]) is None
    assert processes.role_of(["/v/bin/python3", "/v/bin/flower-supernode", "--superlink", "x"]) == "supernode"
    assert processes.role_of(["/v/bin/flower-superlink"]) == "superlink"
    assert processes.role_of(["/v/bin/python3", "/v/bin/flower-superexec"]) is None
    argv = ("python", "flower-supernode", "--auth-supernode-private-key", "/d/keys/supernode-2")
    assert processes.node_name(argv) == "supernode-2"


def _node(node_id: int, status: str, key: bytes, **kw) -> control.Node:
    return control.Node(node_id=node_id, status=status, public_key=key, **kw)


def test_reconcile_plan_registers_the_missing_unregisters_the_rest_and_reports_locked_out_keys():
    nodes = [_node(1, "online", b"A"), _node(2, "offline", b"S"), _node(3, "unregistered", b"C"),
             _node(4, "unregistered", b"B"), _node(5, "registered", b"B")]
    plan = control.plan_reconcile(nodes, {"a": b"A", "b": b"B", "c": b"C", "d": b"D"})
    assert [(name, n.node_id) for name, n in plan.keep] == [("a", 1), ("b", 5)]
    assert [name for name, _ in plan.register] == ["d"]
    assert [(name, n.node_id) for name, n in plan.locked] == [("c", 3)]
    assert [n.node_id for n in plan.unregister] == [2]
    assert not plan.in_sync
    assert control.plan_reconcile(nodes[:1], {"a": b"A"}).in_sync


def test_public_keys_read_as_flower_stores_them(tmp_path):
    from cryptography.hazmat.primitives import serialization

    private, public = make_certs.make_node_keys(tmp_path, "n")
    pem = control.public_key_pem(public)
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    assert control.public_key_pem(private) == pem
    key = serialization.load_ssh_private_key(private.read_bytes(), password=None)
    assert key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo) == pem
    assert control.key_name(public) == control.key_name(private) == "n"
    (tmp_path / "rsa.pub").write_text("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQ== x\n")
    with pytest.raises(ValueError):
        control.public_key_pem(tmp_path / "rsa.pub")


def test_an_online_status_alone_is_not_liveness():
    """A stale entry (online, no process, nothing moving) is not live; a local process that
    started before the activation is; a heartbeat seen while watching is."""
    proc = processes.Proc(pid=10, start=0, role="supernode", name="n", argv=())
    node = _node(7, "online", b"K", last_activated_at="2026-01-01T00:01:00+00:00", online_until=100.0)
    t_activation = 1767225660.0  # 2026-01-01T00:01:00Z
    assert liveness.liveness(node, {}, {}) == ""
    assert liveness.liveness(node, {}, {b"K": (proc, t_activation - 30)}) == "PID 10 here"
    # The process started after the activation: that activation belongs to a dead one.
    assert liveness.liveness(node, {}, {b"K": (proc, t_activation + 30)}) == ""
    assert liveness.liveness(node, {7: (node.last_activated_at, 70.0)}, {}) == "heartbeat seen"
    assert liveness.liveness(node, {7: (node.last_activated_at, 100.0)}, {}) == ""
    assert liveness.liveness(node, {8: ("", 0.0)}, {}) == "activated while watching"
    assert liveness.liveness(_node(7, "offline", b"K"), {}, {b"K": (proc, 0.0)}) == ""


# ----------------------------------------------------------------------------- proxy

def test_proxy_config_passes_the_fleet_api_to_parties_and_control_only_to_admins(tmp_path):
    make_certs.generate(tmp_path, supernodes=1)
    text = proxy.proxy_config(tmp_path, listen="0.0.0.0:9092", superlink="127.0.0.1:9093")
    assert "{{" not in text and "listen 0.0.0.0:9092 ssl;" in text
    assert "client_max_body_size 64m;" in text and "server 127.0.0.1:9093;" in text
    servers = text.split("    server {")[1:]
    assert len(servers) == 1 and "/v1/fleet/" in servers[0]
    assert "/v1/control/" not in servers[0] and "/v1/runtime/" not in servers[0]
    assert "location / {\n            return 403;" in servers[0]
    assert f"proxy_ssl_trusted_certificate {tmp_path / 'certs' / 'ca.crt'};" in text and "proxy_ssl_verify on;" in text
    text = proxy.proxy_config(tmp_path, listen="0.0.0.0:9092", admin=["127.0.0.1:9091", "[::1]:9091"])
    servers = text.split("    server {")[1:]
    assert len(servers) == 3
    for server, listen in zip(servers[1:], ("127.0.0.1:9091", "[::1]:9091")):
        assert f"listen {listen} ssl;" in server and "/v1/control/" in server and "/v1/fleet/" not in server
    for bad in ({"listen": "0.0.0.0:9093"}, {"listen": "127.0.0.1:9093"}, {"admin": ["0.0.0.0:9092"]},
                {"listen": "nope"}, {"listen": "1.2.3.4:70000"}, {"upstream_name": "a b"}, {"max_body_mb": 0}):
        with pytest.raises(ValueError):
            proxy.proxy_config(tmp_path, **{"listen": "0.0.0.0:9092", **bad})
    with pytest.raises(ValueError, match="not usable"):
        proxy.proxy_config(tmp_path / "with space", listen="0.0.0.0:9092")
    with pytest.raises(KeyError):
        proxy.render("a {{X}} {{Y}}", {"X": "1"})
    with pytest.raises(KeyError):
        proxy.render("a {{X}}", {"X": "1", "Z": "2"})


def test_nginx_accepts_the_written_configuration(tmp_path):
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        pytest.skip("nginx is not installed (Debian: apt-get install nginx)")
    make_certs.generate(tmp_path, supernodes=1)
    conf = proxy.write_config(tmp_path, proxy.proxy_config(tmp_path, listen="127.0.0.1:9092",
                                                           admin=["127.0.0.1:9091"], superlink="127.0.0.1:9093"))
    cmd = proxy.nginx_command(nginx, tmp_path, conf, test=True)
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"{shlex.join(cmd)}\n{result.stderr}"


# ----------------------------------------------------------------------------- app bundle

def _bundled(paths: list[str]) -> list[str]:
    from flwr.cli.utils import filter_paths_for_publish

    files = {".gitignore": (ROOT / ".gitignore").read_bytes(), "pyproject.toml": b"", "server/app.py": b""}
    files.update({path: b"" for path in paths})
    kept = filter_paths_for_publish(files)
    assert "server/app.py" in kept
    return [path for path in kept if path in paths]


def test_deployment_folder_stays_out_of_the_app_bundle():
    """`flwr run .` bundles the repository by Flower's rules (its include patterns and the
    root .gitignore): nothing the deployment writes under docker/deploy/ (keys, FLWR_HOME
    with installed app copies, state, the proxy's files) may end up in the FAB shipped to
    every node."""
    inside = [
        "certs/ca.key", "certs/server.key", "certs/server.crt", "keys/supernode-0", "keys/supernode-0.pub",
        "state/superlink.db", "pids/superlink.pid", "pids/supernodes/supernode-0.pid", "proxy/nginx.conf",
        "proxy/logs/access.log", ".flwr/config.toml", ".flwr/apps/mixupfl.mixupfl.0.1.0.abcd1234/server/app.py",
    ]
    assert _bundled([f"docker/deploy/{path}" for path in inside]) == []
    assert Path(deploy.flower_env(Path("/x/docker/deploy"), base={})["FLWR_HOME"]) == Path("/x/docker/deploy/.flwr")


_ROOT_IGNORES_DEPLOY = any(line.strip() in ("/docker/deploy/", "docker/deploy/", "/docker/deploy")
                           for line in (ROOT / ".gitignore").read_text().splitlines())


@pytest.mark.xfail(not _ROOT_IGNORES_DEPLOY, strict=True,
                   reason="the root .gitignore lacks /docker/deploy/: Flower reads only the root one, so a "
                          "party's *.json/*.yaml/*.md/*.toml data under docker/deploy/data/ would ship in the FAB")
def test_party_data_in_the_deployment_folder_stays_out_of_the_app_bundle():
    data = ["docker/deploy/data/supernode-0/train.json", "docker/deploy/data/supernode-0/meta.yaml",
            "docker/deploy/data/supernode-0/README.md", "docker/deploy/data/supernode-0/x.npz"]
    assert _bundled(data) == []
