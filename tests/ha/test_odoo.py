"""Live tests of Odoo behind the web balancers, on the HA DB tier.

Odoo runs wherever the topology has app servers (the scenario takes its source from
ODOO_SOURCE or Odoo's 17.0 archive, scripts/odoo-source.sh); in CI none of these is skipped.

o01 https://<tenant>.<domain>/web/health answers 200 through the web VIP for every
    present restaurant, on both app servers;
o02 onboarding a restaurant by tag clones the group template: timed and printed; the new
    database has its own database.uuid, web.base.url and admin password;
o03 the admin logs in to each of two restaurants over HTTPS; one restaurant's host
    cannot reach another's database (dbfilter), and one's admin password does not open
    the other;
o04 a websocket upgrade on /websocket reaches the gevent port (101, counted on odoo_ws);
o05 a restaurant stays on one app server (balance hdr(host), consistent hashing);
o06 a rolling deploy (playbooks/app_deploy.yml): no failed GET for a client that retries
    idempotent requests once, while each app server is drained, restarted and enabled.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time

import pytest

import halib
from test_web import _context, _docker, _request, _runtime_api, _SNIConnection  # noqa: F401

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "collections"))
from ansible_collections.dine360.saas.plugins.module_utils.tenants import derive_password  # noqa: E402

ADMIN_SOCKET = "/run/haproxy/admin.sock"
NEW_TENANT = "qa-odoo-bistro"


@pytest.fixture(scope="module")
def app(topology) -> dict:
    app = topology.raw.get("app") or {}
    if not app.get("app_nodes"):
        pytest.skip("the topology has no app servers")
    assert app.get("odoo"), "the topology has app servers but no Odoo: every app tier runs Odoo"
    return app


@pytest.fixture(scope="module")
def tls(app):
    node = app["web_nodes"][0]
    pem = _docker(["exec", node["container"], "cat", app["acme_ca_bundle_container_path"]]).stdout
    return _context(pem, ["http/1.1"])


def _host(app, tenant: str) -> str:
    return f"{tenant}.{app['domain']}"


def _get(app, tls, tenant, path, headers=None, address=None):
    return _request(address or app["web_vip"], int(app["https_port"]), _host(app, tenant), path, tls,
                    headers=headers)


def _jsonrpc(app, tls, tenant, path, params, cookie=None):
    body = json.dumps({"jsonrpc": "2.0", "method": "call", "id": 1, "params": params}).encode()
    headers = {"Content-Type": "application/json"}
    if cookie:
        headers["Cookie"] = cookie
    conn = _SNIConnection(app["web_vip"], int(app["https_port"]), _host(app, tenant), tls)
    try:
        conn.request("POST", path, body=body, headers=dict(headers, Host=_host(app, tenant)))
        resp = conn.getresponse()
        data = json.loads(resp.read().decode() or "{}")
        return resp.status, resp.headers, data
    finally:
        conn.close()


def _login(app, tls, tenant, password, db=None):
    status, headers, data = _jsonrpc(app, tls, tenant, "/web/session/authenticate",
                                     {"db": db or tenant, "login": "admin", "password": password})
    return status, headers, data


def _psql(cluster, db: str, query: str) -> str:
    return "\n".join("|".join(row) for row in cluster.psql(cluster.wait_primary(60), query, db=db))


def _playbook(topology, playbook, *args, extra: dict | None = None, timeout=1800):
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", topology.inventory, playbook, *args]
    path = None
    if extra:
        path = os.path.join(ROOT, ".artifacts", f"odoo-test-{os.getpid()}.json")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as fh:
            json.dump(extra, fh)
        cmd += ["-e", f"@{path}"]
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                           env=dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0"))
    finally:
        if path:
            os.unlink(path)
    return p.returncode, p.stdout + p.stderr, time.monotonic() - t0


def test_o01_health_through_the_web_vip(app, tls):
    tenants = app["tenants_present"]
    assert tenants, "no present restaurant in the topology"
    for tenant in tenants:
        status, headers, body = _get(app, tls, tenant, "/web/health")
        assert status == 200, f"{tenant}: /web/health -> {status} {body[:200]}"
        assert json.loads(body).get("status") == "pass", body
        assert headers.get("Strict-Transport-Security"), "no HSTS on an Odoo answer"
    for node in app["app_nodes"]:
        status, _h, body = _request(node["address"], int(app["odoo_http_port"]), "health", "/web/health", None)
        assert status == 200, f"{node['name']}: /web/health -> {status}"


@pytest.fixture(scope="module")
def onboarded(app, topology, cluster):
    """Onboard NEW_TENANT by tag (what an operator does), then offboard it at the end."""
    entries = list(topology.saas_tenants) + [{"name": NEW_TENANT, "plan": "starter", "group": "core",
                                              "state": "present", "company": "QA Odoo Bistro"}]
    rc, out, secs = _playbook(topology, "playbooks/tenants.yml", "--tags", "onboard", "-e", f"tenant={NEW_TENANT}",
                              extra={"saas_tenants": entries})
    assert rc == 0, out[-5000:]
    print(f"\nonboarded {NEW_TENANT} (clone of the core template, identity, filestore, routing) with "
          f"--tags onboard -e tenant={NEW_TENANT} in {secs:.1f}s (whole playbook run)")
    yield entries
    gone = [dict(t, state="absent") if t["name"] == NEW_TENANT else t for t in entries]
    rc, out, _ = _playbook(topology, "playbooks/tenants.yml", "--tags", "offboard", "-e", f"tenant={NEW_TENANT}",
                           extra={"saas_tenants": gone, "tenants_force_offboard": True})
    assert rc == 0, out[-3000:]


def test_o02_onboarded_clone_has_its_own_identity(app, cluster, onboarded, tls):
    seed_tenant = app["tenants_present"][0]
    q = "SELECT key || '=' || value FROM ir_config_parameter WHERE key IN ('database.uuid','web.base.url','dine360.tenant') ORDER BY key"
    mine = dict(r.split("=", 1) for r in _psql(cluster, NEW_TENANT, q).splitlines())
    other = dict(r.split("=", 1) for r in _psql(cluster, seed_tenant, q).splitlines())
    assert mine["dine360.tenant"] == NEW_TENANT
    assert mine["web.base.url"] == f"https://{NEW_TENANT}.{app['domain']}"
    assert mine["database.uuid"] != other["database.uuid"], "two restaurants share a database.uuid"
    company = _psql(cluster, NEW_TENANT, "SELECT name FROM res_company ORDER BY id LIMIT 1")
    assert company == "QA Odoo Bistro"
    templ = _psql(cluster, "postgres", "SELECT datistemplate, datallowconn FROM pg_database WHERE datname = 'core-template'")
    assert templ == "t|f", f"core-template is not a sealed template: {templ}"
    files = _docker(["exec", app["app_nodes"][0]["container"], "ls", f"/var/lib/odoo/filestore/{NEW_TENANT}"], check=False)
    assert files.returncode == 0, f"no filestore for {NEW_TENANT}: {files.stderr}"
    status, _h, body = _get(app, tls, NEW_TENANT, "/web/login")
    assert status == 200 and "oe_login_form" in body, f"/web/login of {NEW_TENANT}: {status}"


def test_o03_login_over_https_and_isolation(app, topology, onboarded, tls):
    seed = topology.saas_password_seed
    a, b = app["tenants_present"][0], NEW_TENANT
    pw = {t: derive_password(seed, "odoo-admin", t) for t in (a, b)}
    for t in (a, b):
        status, headers, data = _login(app, tls, t, pw[t])
        assert status == 200 and data.get("result", {}).get("uid"), f"admin login to {t} failed: {data.get('error')}"
        cookie = headers.get("Set-Cookie", "").split(";")[0]
        st, _h, _b = _get(app, tls, t, "/web", headers={"Cookie": cookie})
        assert st == 200, f"{t}: /web with the session -> {st}"
        print(f"admin logged in to https://{_host(app, t)}/ (uid {data['result']['uid']})")
    # A's host, B's database: dbfilter ^%d$ keeps B out of reach.
    status, _h, data = _login(app, tls, a, pw[b], db=b)
    assert not (data.get("result") or {}).get("uid"), f"{a}'s host opened {b}'s database"
    # A's admin password does not open B.
    status, _h, data = _login(app, tls, b, pw[a])
    assert not (data.get("result") or {}).get("uid"), f"{a}'s admin password opened {b}"
    # The template database is never served.
    st, _h, _b = _get(app, tls, "core-template", "/web/login")
    assert st == 404, f"core-template.<domain> answered {st}"


def _ws_sessions(app) -> int:
    total = 0
    for node in app["web_nodes"]:
        out = _runtime_api(node["container"], "show stat", ADMIN_SOCKET)
        lines = out.splitlines()
        cols = lines[0][2:].split(",")
        for ln in lines[1:]:
            row = dict(zip(cols, ln.split(",")))
            if row.get("pxname") == "odoo_ws" and row.get("svname") == "BACKEND":
                total += int(row.get("stot") or 0)
    return total


def test_o04_websocket_reaches_the_gevent_port(app, tls):
    tenant = app["tenants_present"][0]
    before = _ws_sessions(app)
    key = base64.b64encode(secrets.token_bytes(16)).decode()
    raw = socket.create_connection((app["web_vip"], int(app["https_port"])), timeout=10)
    s = tls.wrap_socket(raw, server_hostname=_host(app, tenant))
    try:
        s.sendall((f"GET /websocket HTTP/1.1\r\nHost: {_host(app, tenant)}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                   f"Origin: https://{_host(app, tenant)}\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                break
            head += chunk
    finally:
        s.close()
    status_line = head.split(b"\r\n", 1)[0].decode()
    assert " 101 " in status_line, f"/websocket answered {status_line!r}"
    assert b"upgrade: websocket" in head.lower()
    assert _ws_sessions(app) > before, "the upgrade did not go through the odoo_ws backend (gevent port)"
    print(f"websocket upgrade through the web VIP: {status_line}")


def test_o05_a_tenant_stays_on_one_app_server(app, tls):
    tenant = app["tenants_present"][0]
    node = app["web_nodes"][0]

    def per_server():
        out = _runtime_api(node["container"], "show stat", ADMIN_SOCKET)
        lines = out.splitlines()
        cols = lines[0][2:].split(",")
        return {r["svname"]: int(r["stot"] or 0) for r in (dict(zip(cols, ln.split(","))) for ln in lines[1:])
                if r.get("pxname") == "odoo_http" and r.get("svname") not in ("FRONTEND", "BACKEND")}

    before = per_server()
    for _ in range(20):
        status, _h, _b = _get(app, tls, tenant, "/web/health", address=node["address"])
        assert status == 200
    after = per_server()
    moved = {s: after[s] - before.get(s, 0) for s in after if after[s] - before.get(s, 0) > 0}
    assert len(moved) == 1 and sum(moved.values()) >= 20, f"{tenant}'s requests spread over {moved}"
    print(f"{tenant}: 20 requests, all on {next(iter(moved))}")


def test_o06_rolling_deploy_without_failed_requests(app, topology, tls):
    tenants = app["tenants_present"]
    stop = threading.Event()
    stats = {"ok": 0, "retried": 0, "failed": 0}
    errors = []

    def client():
        i = 0
        while not stop.is_set():
            tenant = tenants[i % len(tenants)]
            i += 1
            for attempt in (1, 2):
                try:
                    status, _h, _b = _get(app, tls, tenant, "/web/login")
                    if status == 200:
                        stats["ok"] += 1
                        if attempt == 2:
                            stats["retried"] += 1
                        break
                    last = f"HTTP {status}"
                except OSError as exc:
                    last = repr(exc)
                if attempt == 2:
                    stats["failed"] += 1
                    errors.append(f"{tenant}: {last}")
            time.sleep(0.05)

    th = threading.Thread(target=client, daemon=True)
    th.start()
    try:
        rc, out, secs = _playbook(topology, "playbooks/app_deploy.yml", "-e", "app_deploy_restart=true")
    finally:
        stop.set()
        th.join(30)
    assert rc == 0, out[-5000:]
    print(f"\nrolling deploy of {len(app['app_nodes'])} app servers in {secs:.1f}s: {stats['ok']} GETs ok "
          f"({stats['retried']} after one retry), {stats['failed']} failed")
    assert stats["ok"] > 20, stats
    assert stats["failed"] == 0, errors[:10]


BROWSER = "/usr/bin/chromium"
SHOTS = os.path.join(ROOT, ".artifacts", "browser")


def test_o07_browser_login_and_point_of_sale(app, topology, cluster, onboarded, request):
    """Headless Chromium through the web VIP: the admin of the freshly onboarded restaurant logs
    in, opens a Point of Sale session, and the POS UI loads its assets and shows its floor plan.
    A failure leaves a screenshot (and the page's console errors) in .artifacts/browser/."""
    from playwright.sync_api import sync_playwright  # noqa: PLC0415 - only this test needs it

    assert os.access(BROWSER, os.X_OK), f"{BROWSER} missing: scripts/setup.sh installs Debian's chromium"
    tenant, domain = NEW_TENANT, app["domain"]
    password = derive_password(topology.saas_password_seed, "odoo-admin", tenant)
    config_id = int(_psql(cluster, tenant, "SELECT res_id FROM ir_model_data WHERE module = 'pos_restaurant' "
                                           "AND name = 'pos_config_main_restaurant'"))
    base = f"https://{tenant}.{domain}"
    console = []
    os.makedirs(SHOTS, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=BROWSER, headless=True, args=[
            # *.domain resolves to the web VIP: the same path as a customer's browser.
            f"--host-resolver-rules=MAP *.{domain} {app['web_vip']}",
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
            "--disable-background-networking", "--disable-component-update"])
        # The lab's certificate is signed by Pebble's throw-away CA (test_web checks the chain).
        context = browser.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type == "error" else None)
        step = "login page"
        try:
            t0 = time.monotonic()
            page.goto(f"{base}/web/login", wait_until="domcontentloaded", timeout=60000)
            page.fill("input[name=login]", "admin")
            page.fill("input[name=password]", password)
            step = "log in"
            page.click("button[type=submit]")
            page.wait_for_selector(".o_main_navbar", timeout=90000)
            t_login = time.monotonic() - t0
            step = "open a Point of Sale session"
            opened = page.evaluate(
                """async (cid) => {
                    const r = await fetch('/web/dataset/call_kw/pos.config/open_ui', {method: 'POST',
                        headers: {'Content-Type': 'application/json'},
                        body: JSON.stringify({jsonrpc: '2.0', method: 'call', id: 1, params: {
                            model: 'pos.config', method: 'open_ui', args: [[cid]], kwargs: {}}})});
                    return await r.json();
                }""", config_id)
            assert "error" not in opened, f"open_ui failed: {opened['error'].get('data', {}).get('message')}"
            step = "Point of Sale UI (assets, floor plan)"
            t1 = time.monotonic()
            page.goto(f"{base}/pos/ui?config_id={config_id}", wait_until="domcontentloaded", timeout=120000)
            page.wait_for_selector(".floor-screen .floor-map", timeout=180000)
            t_pos = time.monotonic() - t1
            floors = page.locator(".floor-selector .button-floor").count()
            print(f"\nbrowser: admin of {tenant} logged in through the web VIP in {t_login:.1f}s; the Point of "
                  f"Sale reached its floor plan in {t_pos:.1f}s ({floors} floor button(s))")
        except Exception as exc:
            shot = os.path.join(SHOTS, f"{request.node.name}-{int(time.time())}.png")
            page.screenshot(path=shot, full_page=True)
            with open(shot[:-4] + ".console.txt", "w", encoding="utf-8") as fh:
                fh.write("\n".join(console))
            raise AssertionError(f"browser step {step!r} failed at {page.url}: {exc}\nscreenshot: {shot}\n"
                                 f"console errors: {console[-5:]}") from exc
        finally:
            browser.close()


def test_o08_databases_without_odoo_are_found(app, topology, cluster, tls):
    """Restaurant databases made before their group's template existed: an empty one is cloned
    again from the template and answers; one holding data is left as it is, gets the maintenance
    page, and the onboarding run fails naming it and saying how to repair it."""
    empty, holding = "qa-was-empty", "qa-has-data"
    primary = cluster.wait_primary(60)
    for name in (empty, holding):
        cluster.psql(primary, f'CREATE DATABASE "{name}" OWNER odoo_core TEMPLATE template0')
    cluster.psql(primary, "CREATE TABLE orders (id int); INSERT INTO orders VALUES (7)", db=holding)
    entries = list(topology.saas_tenants) + [{"name": n, "plan": "starter", "group": "core", "state": "present"}
                                             for n in (empty, holding)]
    try:
        rc, out, secs = _playbook(topology, "playbooks/tenants.yml", "--tags", "onboard", "-e",
                                  f"tenant={empty},{holding}", extra={"saas_tenants": entries})
        assert rc != 0, "the run must fail while a restaurant's database holds data but no Odoo"
        assert holding in out and "restore" in out, out[-3000:]
        assert _psql(cluster, holding, "SELECT id FROM orders") == "7", "the data was touched"
        status, _h, body = _get(app, tls, holding, "/web/login")
        assert status == 503, f"{holding} (no Odoo) answered {status}, not the maintenance page"
        # The run stopped before proving the other one: prove it again with the broken one set aside.
        rc, out, secs = _playbook(topology, "playbooks/tenants.yml", "--tags", "onboard", "-e",
                                  f"tenant={empty}", extra={"saas_tenants": entries})
        assert rc == 0, out[-4000:]
        assert _psql(cluster, empty, "SELECT value FROM ir_config_parameter WHERE key = 'dine360.tenant'") == empty
        status, _h, body = _get(app, tls, empty, "/web/login")
        assert status == 200 and "oe_login_form" in body, f"{empty}: /web/login -> {status}"
        print(f"\n{empty} (empty) cloned again from the template and answering; {holding} (data, no Odoo) left "
              "as it was, on the maintenance page, named by the failed run")
    finally:
        gone = [dict(t, state="absent") if t["name"] in (empty, holding) else t for t in entries]
        rc, out, _ = _playbook(topology, "playbooks/tenants.yml", "--tags", "offboard", "-e",
                               f"tenant={empty},{holding}", extra={"saas_tenants": gone, "tenants_force_offboard": True})
        assert rc == 0, out[-3000:]


def test_o09_every_database_has_its_own_uuid_and_secret(app, topology, cluster, onboarded):
    """database.uuid and database.secret of every restaurant (suspended ones too) and of every
    group template are all different: no clone kept its template's or a sibling's."""
    primary = cluster.wait_primary(60)
    existing = {r[0] for r in cluster.psql(primary, "SELECT datname FROM pg_database")}
    restaurants = [t["name"] for t in onboarded if t.get("state", "present") != "absent" and t["name"] in existing]
    templates = [r[0] for r in cluster.psql(primary, "SELECT datname FROM pg_database WHERE datistemplate "
                                                     "AND datname NOT IN ('template0', 'template1')")]
    assert templates, "no group template database"
    closed = [r[0] for r in cluster.psql(primary, "SELECT datname FROM pg_database WHERE NOT datallowconn AND "
                                                  "datname <> 'template0'")]
    values = {}
    try:
        for name in closed:  # sealed templates and suspended restaurants refuse connections
            cluster.psql(primary, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        for name in restaurants + templates:
            rows = cluster.psql(primary, "SELECT key, value FROM ir_config_parameter WHERE key IN "
                                         "('database.uuid', 'database.secret')", db=name)
            values[name] = dict(rows)
    finally:
        for name in closed:
            cluster.psql(primary, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    for what in ("database.uuid", "database.secret"):
        seen = {}
        for name, params in values.items():
            assert params.get(what), f"{name} has no {what}"
            seen.setdefault(params[what], []).append(name)
        shared = [names for names in seen.values() if len(names) > 1]
        assert not shared, f"{what} shared by {shared}"
    print(f"\n{len(restaurants)} restaurant(s) and {len(templates)} template(s): every database.uuid and "
          "database.secret is its own")
