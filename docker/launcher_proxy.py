"""The nginx reverse proxy in front of the SuperLink, for ``docker/deploy.py proxy``:
writes ``<dir>/proxy/nginx.conf`` from ``docker/nginx.conf.template`` and builds the nginx
command (foreground, its own prefix, PID file and logs under ``<dir>/proxy/``).

Standard library only: the proxy image has nginx and Python, not Flower.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "nginx.conf.template"
DEFAULT_LISTEN = "0.0.0.0:9092"

ADMIN_SERVER = """
    # Operator: the Control API only ({listen}).
    server {{
        listen {listen} ssl;

        location ~ ^/v1/control/[a-z][a-z-]*$ {{
            if ($request_uri !~ "^/v1/control/[a-z][a-z-]*$") {{
                return 403;
            }}
            if ($request_method != POST) {{
                return 405;
            }}
            proxy_pass https://superlink;
        }}

        location / {{
            return 403;
        }}
    }}
"""


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` / ``[v6]:port`` -> (host, port); raises ValueError."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^:\[\]\s]+):(\d{1,5})", address.strip())
    if not match:
        raise ValueError(f"not a host:port address: {address!r}")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 0 < port < 65536:
        raise ValueError(f"port out of range in {address!r}")
    return host, port


def listen_value(address: str) -> str:
    """nginx ``listen`` value for ``host:port`` (IPv6 in brackets)."""
    host, port = split_address(address)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def render(template: str, values: dict[str, str]) -> str:
    """Replace every ``{{NAME}}``; an unknown or missing name is an error."""
    names = set(re.findall(r"\{\{([A-Z_]+)\}\}", template))
    if missing := names - set(values):
        raise KeyError(f"no value for template field(s) {sorted(missing)}")
    if unused := set(values) - names:
        raise KeyError(f"template has no field(s) {sorted(unused)}")
    return re.sub(r"\{\{([A-Z_]+)\}\}", lambda m: values[m.group(1)], template)


def _path(path: Path) -> str:
    text = str(Path(path).resolve())
    if re.search(r"[\s;{}'\"$\\]", text):
        raise ValueError(f"path not usable in an nginx configuration: {text!r}")
    return text


def proxy_config(dirpath: Path, *, listen: str = DEFAULT_LISTEN, admin: list[str] | None = None,
                 superlink: str = "127.0.0.1:9093", upstream_name: str = "localhost",
                 cert: Path | None = None, key: Path | None = None, ca: Path | None = None,
                 max_body_mb: int = 64, template: Path = TEMPLATE) -> str:
    """The nginx configuration text (see ``nginx.conf.template``)."""
    certs = dirpath / "certs"
    prefix = dirpath / "proxy"
    admin = list(admin or [])
    listens = [listen_value(a) for a in [listen, *admin]]
    if len(set(listens)) != len(listens):
        raise ValueError(f"the parties' and admin addresses must differ: {listens}")
    up_host, up_port = split_address(superlink)
    for address in [listen, *admin]:
        host, port = split_address(address)
        if port == up_port and (host in ("0.0.0.0", "::") or host == up_host):
            raise ValueError(f"{address} would take the SuperLink's own port {superlink}")
    if not 1 <= int(max_body_mb) <= 4096:
        raise ValueError(f"--max-body-mb {max_body_mb}: 1 to 4096")
    if not re.fullmatch(r"[A-Za-z0-9.-]+", upstream_name):
        raise ValueError(f"invalid upstream certificate name {upstream_name!r}")
    values = {
        "PID_FILE": _path(prefix / "nginx.pid"),
        "ERROR_LOG": _path(prefix / "logs" / "error.log"),
        "ACCESS_LOG": _path(prefix / "logs" / "access.log"),
        "TEMP": _path(prefix / "tmp"),
        "CERT": _path(cert or certs / "server.crt"),
        "KEY": _path(key or certs / "server.key"),
        "CA": _path(ca or certs / "ca.crt"),
        "UPSTREAM": listen_value(superlink),
        "UPSTREAM_NAME": upstream_name,
        "MAX_BODY": f"{int(max_body_mb)}m",
        "PARTIES_LISTEN": listens[0],
        "ADMIN_SERVERS": "".join(ADMIN_SERVER.format(listen=value) for value in listens[1:]),
    }
    return render(template.read_text(encoding="utf-8"), values)


def write_config(dirpath: Path, text: str) -> Path:
    """``<dir>/proxy/nginx.conf`` and the folders nginx writes to."""
    prefix = dirpath / "proxy"
    for sub in ("logs", "tmp"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    path = prefix / "nginx.conf"
    path.write_text(text, encoding="utf-8")
    return path


def nginx_executable(value: str | None = None) -> str:
    """``--nginx``, else ``nginx`` on PATH, else Debian's /usr/sbin/nginx."""
    if value:
        return value
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if not found:
        raise SystemExit("deploy: nginx not found (Debian/Ubuntu: apt-get install nginx; or pass --nginx PATH)")
    return found


def nginx_command(nginx: str, dirpath: Path, conf: Path, *, test: bool = False) -> list[str]:
    """nginx in the foreground (``daemon off`` is in the configuration) with ``<dir>/proxy/``
    as its prefix; ``-e stderr`` keeps start-up errors off /var/log/nginx."""
    cmd = [nginx, "-p", f"{_path(dirpath / 'proxy')}/", "-c", _path(conf), "-e", "stderr"]
    return cmd + ["-t", "-q"] if test else cmd
