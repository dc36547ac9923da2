"""Live tests of the web tier's HAProxy (roles/haproxy, web profile) on the web balancers.

Everything here is answered by HAProxy itself, so the tests pass whether or not Odoo runs
behind it (without Odoo the backends are simply down):

01 the served certificate: SNI <tenant>.<domain>, verified against the ACME CA bundle
   taken from a web container, SAN *.<domain>, TLS >= 1.2, ALPN h2;
02 http:// answers 301 to https:// with the same host, path and query;
03 hosts that are not tenants (random names, the bare domain, group template databases)
   get HAProxy's 404 page, with HSTS;
04 suspended tenants get the 503 maintenance page with Retry-After, with HSTS;
05 a present tenant is routed (neither the 404 nor the maintenance page);
06 Odoo's database manager and db service are refused by HAProxy (403), with HSTS;
07 drain and enable of an app server through the runtime API (admin socket), in every web
   backend, on every web balancer.

Requests go from this machine to the web VIP and to each web node's address, with the SNI
and the Host header of the tenant. The topology's ``app`` key describes the web tier; the
tests are skipped when it is absent.
"""

from __future__ import annotations

import http.client
import secrets
import socket
import ssl
import subprocess

import pytest

import halib

WEB_BACKENDS = ("odoo_http", "odoo_ws")
ADMIN_SOCKET = "/run/haproxy/admin.sock"
TIMEOUT = 10.0
MAINTENANCE_MARKER = "dine360-maintenance"
UNKNOWN_HOST_MARKER = "dine360-unknown-host"
HAPROXY_DENY_MARKER = "Request forbidden by administrative rules"
# srv_admin_state bit of "show servers state": drain forced through the runtime API.
SRV_ADMF_FDRAIN = 0x08
SRV_STATE_RUNNING = 2

# Sends one command to HAProxy's runtime API (non-interactive: HAProxy closes after the answer).
_RUNTIME_API = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
    "s.settimeout(10)\n"
    "s.connect(sys.argv[1])\n"
    "s.sendall(sys.argv[2].encode() + b'\\n')\n"
    "out = b''\n"
    "while True:\n"
    "    chunk = s.recv(65536)\n"
    "    if not chunk:\n"
    "        break\n"
    "    out += chunk\n"
    "sys.stdout.write(out.decode())\n"
)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def app(topology) -> dict:
    app = topology.raw.get("app")
    if not app:
        pytest.skip("the topology has no 'app' key: no web tier deployed (tools/topology.yml writes it "
                    "when the inventory has web_balancers)")
    for key in ("domain", "web_vip", "web_nodes", "app_nodes", "https_port", "http_port",
                "acme_ca_bundle_container_path"):
        if key not in app:
            pytest.fail(f"topology 'app' lacks the key {key!r}")
    if not app["web_nodes"]:
        pytest.fail("topology 'app' lists no web_nodes")
    return app


@pytest.fixture(scope="module")
def targets(app) -> list[tuple[str, str]]:
    """(label, address) of every address clients may use: the VIP and each web node."""
    return [("vip", app["web_vip"])] + [(n["name"], n["address"]) for n in app["web_nodes"]]


@pytest.fixture(scope="module")
def ca_pem(app) -> str:
    """The CA bundle that trusts the served certificate, read from the first web container."""
    node = app["web_nodes"][0]
    pem = _docker(["exec", node["container"], "cat", app["acme_ca_bundle_container_path"]]).stdout
    if "BEGIN CERTIFICATE" not in pem:
        pytest.fail(f"{app['acme_ca_bundle_container_path']} in {node['container']} holds no certificate")
    return pem


@pytest.fixture(scope="module")
def tls(ca_pem) -> ssl.SSLContext:
    """A verifying client context (only that CA) offering h2 and HTTP/1.1."""
    return _context(ca_pem, ["h2", "http/1.1"])


@pytest.fixture(scope="module")
def http11(ca_pem) -> ssl.SSLContext:
    """Like ``tls`` but offering only HTTP/1.1 (http.client speaks nothing else)."""
    return _context(ca_pem, ["http/1.1"])


# --------------------------------------------------------------------------- helpers


def _docker(args: list[str], timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([halib.DOCKER, *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])}... failed rc={proc.returncode}: {proc.stderr.strip()}")
    return proc


def _context(ca_pem: str, alpn: list[str]) -> ssl.SSLContext:
    # check_hostname stays on: the handshake fails unless the chain verifies against the CA
    # bundle and the certificate matches the SNI name.
    ctx = ssl.create_default_context(cadata=ca_pem)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(alpn)
    return ctx


class _SNIConnection(http.client.HTTPConnection):
    """HTTPS to an address (VIP or node) with the SNI of a tenant host."""

    def __init__(self, address: str, port: int, sni: str, ctx: ssl.SSLContext):
        super().__init__(address, port, timeout=TIMEOUT)
        self._sni = sni
        self._ctx = ctx

    def connect(self):
        super().connect()
        self.sock = self._ctx.wrap_socket(self.sock, server_hostname=self._sni)


def _request(address: str, port: int, host: str, path: str, ctx: ssl.SSLContext | None,
             method: str = "GET", body: bytes | None = None, headers: dict | None = None
             ) -> tuple[int, http.client.HTTPMessage, str]:
    """One request; HTTPS with SNI ``host`` when ``ctx`` is given, plain HTTP otherwise."""
    if ctx is None:
        conn = http.client.HTTPConnection(address, port, timeout=TIMEOUT)
    else:
        conn = _SNIConnection(address, port, host, ctx)
    try:
        hdrs = {"Host": host, "Connection": "close"}
        hdrs.update(headers or {})
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        text = resp.read().decode("utf-8", "replace")
        return resp.status, resp.headers, text
    finally:
        conn.close()


def _assert_hsts(headers: http.client.HTTPMessage, what: str) -> None:
    value = headers.get("Strict-Transport-Security")
    assert value, f"{what}: no Strict-Transport-Security header"
    parts = [p.strip().lower() for p in value.split(";")]
    max_age = [p for p in parts if p.startswith("max-age=")]
    assert max_age and int(max_age[0].split("=", 1)[1]) > 0, f"{what}: HSTS without a max-age: {value!r}"
    assert "includesubdomains" in parts, f"{what}: HSTS without includeSubDomains: {value!r}"


def _some_tenant(app: dict) -> str:
    names = list(app.get("tenants_present") or []) + list(app.get("tenants_suspended") or [])
    return names[0] if names else "www"


def _runtime_api(container: str, command: str, socket_path: str) -> str:
    proc = _docker(["exec", container, "python3", "-c", _RUNTIME_API, socket_path, command], timeout=30)
    return proc.stdout


def _servers_state(container: str, backend: str, socket_path: str) -> dict[str, dict]:
    """``show servers state <backend>``: server name -> {op_state, admin_state} (ints)."""
    out = _runtime_api(container, f"show servers state {backend}", socket_path)
    lines = [ln for ln in out.splitlines() if ln.strip()]
    header = next((ln for ln in lines if ln.startswith("# be_id")), None)
    if header is None:
        raise AssertionError(f"unexpected answer to 'show servers state {backend}': {out[:500]!r}")
    cols = header[2:].split()
    result = {}
    for ln in lines:
        if ln.startswith("#") or ln.strip() == "1":
            continue
        row = dict(zip(cols, ln.split()))
        if row.get("be_name") == backend and "srv_name" in row:
            result[row["srv_name"]] = {"op_state": int(row["srv_op_state"]),
                                       "admin_state": int(row["srv_admin_state"])}
    return result


def _stat_status(container: str, backend: str, server: str, socket_path: str) -> str | None:
    out = _runtime_api(container, "show stat", socket_path)
    lines = out.splitlines()
    if not lines or not lines[0].startswith("# pxname"):
        raise AssertionError(f"unexpected answer to 'show stat': {out[:300]!r}")
    cols = lines[0][2:].split(",")
    for ln in lines[1:]:
        row = dict(zip(cols, ln.split(",")))
        if row.get("pxname") == backend and row.get("svname") == server:
            return row.get("status")
    return None


# --------------------------------------------------------------------------- tests


def test_01_certificate_for_tenant_hosts(app, targets, tls):
    domain = app["domain"]
    sni = f"{_some_tenant(app)}.{domain}"
    for label, address in targets:
        with socket.create_connection((address, int(app["https_port"])), timeout=TIMEOUT) as raw:
            with tls.wrap_socket(raw, server_hostname=sni) as s:
                cert = s.getpeercert()
                version = s.version()
                alpn = s.selected_alpn_protocol()
        sans = [v for k, v in cert.get("subjectAltName", ()) if k == "DNS"]
        print(f"\n  {label} {address}: {version}, ALPN {alpn}, SAN {sans}")
        assert f"*.{domain}" in sans, f"{label}: certificate SAN {sans} lacks *.{domain}"
        assert version in ("TLSv1.2", "TLSv1.3"), f"{label}: negotiated {version}"
        assert alpn == "h2", f"{label}: ALPN {alpn!r}, expected h2 (alpn h2,http/1.1)"


def test_02_http_redirects_to_https(app, targets):
    host = f"{_some_tenant(app)}.{app['domain']}"
    path = "/web/login?redirect=%2Fodoo&x=1"
    for label, address in targets:
        status, headers, _ = _request(address, int(app["http_port"]), host, path, None)
        assert status == 301, f"{label}: http:// answered {status}, expected 301"
        location = headers.get("Location", "")
        https_port = int(app["https_port"])
        expected = f"https://{host}{path}" if https_port == 443 else f"https://{host}:{https_port}{path}"
        assert location == expected, f"{label}: Location {location!r}, expected {expected!r}"


def test_03_unknown_hosts_get_404_from_haproxy(app, targets, http11, topology):
    domain = app["domain"]
    groups = topology.raw.get("saas_groups") or {"core": {}}
    templates = [g.get("template_db") or f"{name}-template" for name, g in groups.items()]
    hosts = [f"nosuch-{secrets.token_hex(4)}.{domain}", domain, f"postgres.{domain}"]
    hosts += [f"{t}.{domain}" for t in templates]
    for label, address in targets:
        for host in hosts:
            status, headers, body = _request(address, int(app["https_port"]), host, "/web/login", http11)
            assert status == 404, f"{label} {host}: {status}, expected HAProxy's 404"
            assert UNKNOWN_HOST_MARKER in body, f"{label} {host}: the 404 is not HAProxy's page: {body[:200]!r}"
            _assert_hsts(headers, f"{label} {host} 404")


def test_04_suspended_tenant_gets_maintenance_page(app, targets, http11):
    suspended = list(app.get("tenants_suspended") or [])
    if not suspended:
        pytest.skip("the topology lists no suspended tenant (app.tenants_suspended)")
    for label, address in targets:
        for name in suspended:
            host = f"{name}.{app['domain']}"
            for path in ("/", "/web/login", "/websocket"):
                status, headers, body = _request(address, int(app["https_port"]), host, path, http11)
                assert status == 503, f"{label} {host}{path}: {status}, expected 503"
                assert MAINTENANCE_MARKER in body, f"{label} {host}{path}: not the maintenance page: {body[:200]!r}"
                retry_after = headers.get("Retry-After", "")
                assert retry_after.isdigit() and int(retry_after) > 0, \
                    f"{label} {host}{path}: Retry-After {retry_after!r}"
                _assert_hsts(headers, f"{label} {host}{path} 503")


def test_05_present_tenant_is_routed(app, targets, http11):
    present = list(app.get("tenants_present") or [])
    if not present:
        pytest.skip("the topology lists no present tenant (app.tenants_present)")
    for label, address in targets:
        host = f"{present[0]}.{app['domain']}"
        status, headers, body = _request(address, int(app["https_port"]), host, "/web/login", http11)
        # Odoo answers (200/303) or, without Odoo, HAProxy's "no server available" 503 —
        # never the unknown-host page or the maintenance page.
        print(f"\n  {label} {host}/web/login: {status}")
        assert status != 404 or UNKNOWN_HOST_MARKER not in body, f"{label} {host}: treated as unknown host"
        assert MAINTENANCE_MARKER not in body, f"{label} {host}: got the maintenance page"
        _assert_hsts(headers, f"{label} {host}")


def test_06_database_manager_is_blocked(app, targets, http11):
    host = f"{_some_tenant(app)}.{app['domain']}"
    paths = ["/web/database/manager", "/web/database/selector", "/web/database/list",
             "/WEB/DataBase/Manager", "//web//database/manager", "/web/%64atabase/manager",
             "/xmlrpc/db", "/xmlrpc/2/db"]
    for label, address in targets:
        for path in paths:
            status, headers, body = _request(address, int(app["https_port"]), host, path, http11)
            assert status in (403, 404), f"{label} {host}{path}: {status}, expected 403/404 from HAProxy"
            assert HAPROXY_DENY_MARKER in body, f"{label} {host}{path}: not refused by HAProxy: {body[:200]!r}"
            _assert_hsts(headers, f"{label} {path}")
        rpc = (b'{"jsonrpc": "2.0", "method": "call", '
               b'"params": {"service": "db", "method": "list", "args": []}}')
        status, _, body = _request(address, int(app["https_port"]), host, "/jsonrpc", http11, method="POST",
                                   body=rpc, headers={"Content-Type": "application/json"})
        assert status == 403 and HAPROXY_DENY_MARKER in body, \
            f"{label}: JSON-RPC db service answered {status}: {body[:200]!r}"


def test_07_drain_and_enable_app_server(app):
    socket_path = app.get("haproxy_admin_socket", ADMIN_SOCKET)
    backends = list(app.get("web_backends") or WEB_BACKENDS)
    if not app["app_nodes"]:
        pytest.skip("the topology lists no app_nodes")
    server = app["app_nodes"][0]["name"]
    for node in app["web_nodes"]:
        container = node["container"]
        try:
            for backend in backends:
                before = _servers_state(container, backend, socket_path)
                assert server in before, f"{node['name']}: no server {server} in {backend} ({sorted(before)})"
                assert not before[server]["admin_state"] & SRV_ADMF_FDRAIN, \
                    f"{node['name']}: {backend}/{server} is already drained"
                out = _runtime_api(container, f"set server {backend}/{server} state drain", socket_path)
                assert out.strip() == "", f"{node['name']}: drain answered {out!r}"
                state = _servers_state(container, backend, socket_path)[server]
                status = _stat_status(container, backend, server, socket_path)
                print(f"\n  {node['name']} {backend}/{server} drained: show stat status {status!r}, "
                      f"admin_state {state['admin_state']:#x}, op_state {state['op_state']}")
                assert state["admin_state"] & SRV_ADMF_FDRAIN, f"{node['name']}: {backend}/{server} not drained"
                if state["op_state"] == SRV_STATE_RUNNING:
                    assert status == "DRAIN", f"{node['name']}: {backend}/{server} status {status!r}"
                else:
                    # A server whose checks fail (no Odoo) shows DOWN in show stat even when drained.
                    assert status is not None and status.startswith(("DOWN", "DRAIN")), status
            for backend in backends:
                out = _runtime_api(container, f"set server {backend}/{server} state ready", socket_path)
                assert out.strip() == "", f"{node['name']}: enable answered {out!r}"
                state = _servers_state(container, backend, socket_path)[server]
                status = _stat_status(container, backend, server, socket_path)
                assert not state["admin_state"] & SRV_ADMF_FDRAIN, f"{node['name']}: {backend}/{server} still drained"
                assert status != "DRAIN", f"{node['name']}: {backend}/{server} status {status!r} after enable"
        finally:
            for backend in backends:
                _runtime_api(container, f"set server {backend}/{server} state ready", socket_path)
