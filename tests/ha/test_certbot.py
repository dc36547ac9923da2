"""The wildcard certificate on the web balancers (roles/certbot), against the ACME and DNS
test servers (Pebble and BIND9, molecule/default/prepare_acme.yml).

Needs the topology key ``app``: ``domain``, ``web_nodes`` [{name, address, container}],
``acme_container``, ``acme_address`` (and optionally ``web_vip``, ``certbot_pem``,
``acme_ca_bundle_container_path``, ``textfile_dir``). Skipped, saying so, when it is absent.

- c01: every web balancer holds HAProxy's PEM (0600 root) with a leaf for ``*.<domain>``
  and ``<domain>`` issued by Pebble's current intermediate, and the expiry metric matches it;
- c02: a forced renewal through certbot.service gives each balancer a new certificate,
  which HAProxy serves (where it runs) and the metrics record;
- c03: with DNS-01 broken (BIND refuses updates: ``rndc freeze`` of the challenge zone), a
  forced renewal fails: the service fails, the PEM and the served certificate stay, the
  failure metric is written (and, where Prometheus scrapes the node, CertificateRenewalFailing
  fires). Then the zone is thawed and a normal renewal run clears the failure.

Renewals are forced through the service's one-shot arguments file, which the service
deletes after each run (roles/certbot/README.md).
"""

from __future__ import annotations

import calendar
import json
import re
import ssl
import time
import urllib.parse
import urllib.request

import pytest

import halib

RENEW_ENV_FILE = "/run/dine360-certbot-renew.env"
FORCE = "--force-renewal --no-random-sleep-on-renew"
NO_SLEEP = "--no-random-sleep-on-renew"
RENEW_TIMEOUT = 300.0
# A run the timer started may sleep up to 8 minutes (certbot's random delay) before it renews.
BUSY_TIMEOUT = 600.0
ALERT_TIMEOUT = 240.0


@pytest.fixture(scope="module")
def app(topology) -> dict:
    app = topology.raw.get("app")
    if not app or not app.get("web_nodes"):
        pytest.skip("the topology has no 'app' key with web_nodes (web balancers and ACME test servers)")
    for key in ("domain", "acme_container", "acme_address"):
        if not app.get(key):
            pytest.fail(f"topology key app.{key} is missing")
    return app


@pytest.fixture(scope="module")
def ops(topology) -> halib.Cluster:
    # Only its docker helpers are used: the DB tier's state does not matter here.
    return halib.Cluster(topology)


@pytest.fixture(scope="module")
def web_nodes(app) -> list[halib.Node]:
    return [halib.Node(n["name"], n["address"], n["container"]) for n in app["web_nodes"]]


@pytest.fixture(scope="module")
def acme(app) -> halib.Node:
    return halib.Node("acme", app["acme_address"], app["acme_container"])


def pem_path(app) -> str:
    return app.get("certbot_pem") or f"/etc/haproxy/certs/{app['domain']}.pem"


def bundle_path(app) -> str:
    return (app.get("acme_ca_bundle_container_path") or app.get("acme_ca_bundle")
            or "/usr/local/share/dine360/acme-test-ca.pem")


def not_after(ops, node, path: str) -> int:
    end = cert_field(ops, node, path, "-enddate").split("=", 1)[1]
    return calendar.timegm(time.strptime(end, "%b %d %H:%M:%S %Y GMT"))


def metric_files(app) -> tuple[str, str]:
    d = app.get("textfile_dir") or "/var/lib/prometheus/node-exporter"
    return (f"{d}/dine360_certificate_{app['domain']}.prom", f"{d}/dine360_certificate_renewal_{app['domain']}.prom")


def sh(ops: halib.Cluster, node: halib.Node, script: str, timeout: float = 60, check: bool = True):
    return ops.dexec(node, ["sh", "-c", script], timeout=timeout, check=check)


def cert_field(ops, node, path: str, *args: str) -> str:
    return ops.dexec(node, ["openssl", "x509", "-in", path, "-noout", *args]).stdout.strip()


def serial(ops, node, path: str) -> str:
    return cert_field(ops, node, path, "-serial").split("=", 1)[1]


def served_serial(ops, node, domain: str, address: str) -> str | None:
    """Serial of the certificate served on address:443 for x.<domain> (SNI), fetched from inside node."""
    proc = sh(ops, node, f"openssl s_client -connect {address}:443 -servername x.{domain} </dev/null 2>/dev/null"
                         " | openssl x509 -noout -serial", timeout=30, check=False)
    m = re.search(r"serial=([0-9A-F]+)", proc.stdout)
    return m.group(1) if m else None


def served_address(ops, app, node) -> str | None:
    """Where HAProxy on node serves the PEM: its address, loopback or the web VIP (None: HAProxy not running)."""
    if not haproxy_active(ops, node):
        return None
    current = serial(ops, node, pem_path(app))
    candidates = [node.address, "127.0.0.1"] + ([app["web_vip"]] if app.get("web_vip") else [])
    seen = {a: served_serial(ops, node, app["domain"], a) for a in candidates}
    for address, got in seen.items():
        if got == current:
            return address
    pytest.fail(f"HAProxy runs on {node.name} but serves no certificate with the PEM's serial {current} on :443 "
                f"(served: {seen})")
    return None


def haproxy_active(ops, node) -> bool:
    return ops.dexec(node, ["systemctl", "is-active", "--quiet", "haproxy"], check=False).returncode == 0


def metrics(ops, node, path: str) -> dict[str, float]:
    text = ops.dexec(node, ["cat", path]).stdout
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(\w+)\{[^}]*\} (\S+)$", text, flags=re.M)}


def pebble_intermediate_subject(ops, node, app) -> str:
    """Subject of Pebble's current intermediate, from its management endpoint (trusting the test CA)."""
    from cryptography import x509
    ctx = ssl.create_default_context(cadata=ops.dexec(node, ["cat", bundle_path(app)]).stdout)
    url = f"https://{app['acme_address']}:15000/intermediates/0"
    with urllib.request.urlopen(url, context=ctx, timeout=10) as resp:  # noqa: S310 - the ACME test container
        return x509.load_pem_x509_certificate(resp.read()).subject.rfc4514_string()


def wait_idle(ops, node) -> None:
    halib.wait_until(
        lambda: ops.dexec(node, ["systemctl", "is-active", "certbot.service"], check=False).stdout.strip() != "activating",
        BUSY_TIMEOUT, f"certbot.service on {node.name} is still running (a timer run)", interval=5)


def run_renewal(ops, node, args: str) -> tuple[int, float]:
    """One run of certbot.service with one-shot arguments; (systemctl's exit status, seconds)."""
    wait_idle(ops, node)
    sh(ops, node, f"printf 'DINE360_CERTBOT_RENEW_ARGS=%s\\n' '{args}' > {RENEW_ENV_FILE}")
    t0 = time.monotonic()
    proc = ops.dexec(node, ["systemctl", "start", "certbot.service"], timeout=RENEW_TIMEOUT, check=False)
    secs = time.monotonic() - t0
    left = ops.dexec(node, ["test", "-e", RENEW_ENV_FILE], check=False).returncode == 0
    assert not left, f"{RENEW_ENV_FILE} left on {node.name} after the run"
    return proc.returncode, secs


def journal(ops, node, lines: int = 15) -> str:
    return ops.dexec(node, ["journalctl", "-u", "certbot.service", "-n", str(lines), "--no-pager"], check=False).stdout


# ---------------------------------------------------------------- tests


def test_c01_every_balancer_has_the_wildcard_pem(ops, app, web_nodes):
    domain, pem = app["domain"], pem_path(app)
    expiry_file, _ = metric_files(app)
    issuer = pebble_intermediate_subject(ops, web_nodes[0], app)
    for node in web_nodes:
        mode = ops.dexec(node, ["stat", "-c", "%a %U %G", pem]).stdout.split()
        assert mode == ["600", "root", "root"], f"{node.name}: {pem} is {mode}"
        dmode = ops.dexec(node, ["stat", "-c", "%a %U", pem.rsplit("/", 1)[0]]).stdout.split()
        assert dmode[0] in ("700", "750") and dmode[1] == "root", f"{node.name}: directory {dmode}"
        # Counted in the container: the private key does not leave the node.
        certs = int(ops.dexec(node, ["grep", "-c", "BEGIN CERTIFICATE", pem]).stdout)
        keys = int(ops.dexec(node, ["grep", "-c", "BEGIN .*PRIVATE KEY", pem], check=False).stdout or 0)
        assert certs >= 2 and keys == 1, f"{node.name}: PEM has {certs} certificates and {keys} keys (want chain + key)"
        san = cert_field(ops, node, pem, "-ext", "subjectAltName")
        assert f"DNS:*.{domain}" in san and re.search(rf"DNS:{re.escape(domain)}(,|$)", san, flags=re.M), san
        got = cert_field(ops, node, pem, "-issuer", "-nameopt", "RFC2253").split("=", 1)[1]
        assert got == issuer, f"{node.name}: issued by {got!r}, Pebble's intermediate is {issuer!r}"
        verify = ops.dexec(node, ["openssl", "verify", "-CAfile", bundle_path(app), "-untrusted", pem, pem], check=False)
        assert verify.returncode == 0, f"{node.name}: chain does not verify to Pebble's root: {verify.stdout}{verify.stderr}"
        end = cert_field(ops, node, pem, "-enddate").split("=", 1)[1]
        m = metrics(ops, node, expiry_file)
        assert m.get("dine360_certificate_expiry_timestamp_seconds") == not_after(ops, node, pem), (m, end)
        print(f"\n{node.name}: {pem} serial {serial(ops, node, pem)} for {san.splitlines()[-1].strip()}, "
              f"issuer {got}, expires {end}")


def test_c02_forced_renewal_is_served(ops, app, web_nodes):
    domain, pem = app["domain"], pem_path(app)
    expiry_file, renewal_file = metric_files(app)
    for node in web_nodes:
        before = serial(ops, node, pem)
        address = served_address(ops, app, node)
        t_start = time.time()
        rc, secs = run_renewal(ops, node, FORCE)
        assert rc == 0, f"forced renewal failed on {node.name}:\n{journal(ops, node)}"
        after = serial(ops, node, pem)
        assert after != before, f"{node.name}: serial still {before} after a forced renewal"
        m = metrics(ops, node, renewal_file)
        assert m["dine360_certificate_renewal_last_success_timestamp_seconds"] >= int(t_start) - 1, m
        expiry = metrics(ops, node, expiry_file)["dine360_certificate_expiry_timestamp_seconds"]
        assert expiry == not_after(ops, node, pem), f"{node.name}: expiry metric {expiry} is not the new certificate's"
        if address:
            halib.wait_until(lambda n=node, a=address: served_serial(ops, n, domain, a) == after, 30,
                             f"HAProxy on {node.name} does not serve the new certificate {after} on {address}:443")
            served = f"HAProxy serves {after} on {address}:443"
        else:
            served = "HAProxy not running there"
        print(f"\n{node.name}: forced renewal in {secs:.1f}s, serial {before} -> {after}; {served}")


def test_c03_failed_renewal_keeps_the_certificate(ops, topology, app, web_nodes, acme):
    domain, pem = app["domain"], pem_path(app)
    _, renewal_file = metric_files(app)
    node = web_nodes[0]
    zone = f"_acme-challenge.{domain}"
    digest = ops.dexec(node, ["sha256sum", pem]).stdout.split()[0]
    address = served_address(ops, app, node)
    served_before = served_serial(ops, node, domain, address) if address else None
    t_start = time.time()
    ops.dexec(acme, ["rndc", "freeze", zone])
    try:
        rc, secs = run_renewal(ops, node, FORCE)
        assert rc != 0, f"renewal passed with DNS updates refused:\n{journal(ops, node)}"
        result = ops.dexec(node, ["systemctl", "show", "--property=Result", "--value", "certbot.service"]).stdout.strip()
        assert result != "success", result
        assert ops.dexec(node, ["sha256sum", pem]).stdout.split()[0] == digest, f"{node.name}: the PEM changed"
        if served_before:
            assert served_serial(ops, node, domain, address) == served_before, "HAProxy serves another certificate"
        m = metrics(ops, node, renewal_file)
        failed_at = m["dine360_certificate_renewal_last_failure_timestamp_seconds"]
        assert failed_at >= int(t_start) - 1, m
        assert failed_at > m["dine360_certificate_renewal_last_success_timestamp_seconds"], m
        print(f"\n{node.name}: renewal with DNS-01 refused failed in {secs:.1f}s (Result={result}); "
              f"PEM and served certificate unchanged; failure metric written")
    finally:
        ops.dexec(acme, ["rndc", "thaw", zone], check=False)
    _check_alert(topology, node)
    # A normal run (nothing due) succeeds again and clears the failure state.
    rc, _ = run_renewal(ops, node, NO_SLEEP)
    assert rc == 0, f"renewal after the zone was thawed failed on {node.name}:\n{journal(ops, node)}"
    m = metrics(ops, node, renewal_file)
    assert (m["dine360_certificate_renewal_last_success_timestamp_seconds"]
            > m["dine360_certificate_renewal_last_failure_timestamp_seconds"]), m
    assert ops.dexec(node, ["sha256sum", pem]).stdout.split()[0] == digest


def _prom_get(url: str):
    with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - lab/CI addresses only
        return json.loads(resp.read().decode())


def _check_alert(topology, node) -> None:
    """Where Prometheus scrapes the node's node_exporter: the failure reaches Alertmanager."""
    prom, am = topology.raw.get("prometheus_url"), topology.raw.get("alertmanager_url")
    if not prom or not am:
        print("  (no monitoring in the topology: alert not checked)")
        return
    q = urllib.parse.urlencode({"query": f'up{{job="node", instance="{node.name}"}}'})
    if not _prom_get(f"{prom}/api/v1/query?{q}")["data"]["result"]:
        print(f"  (Prometheus does not scrape node_exporter on {node.name}: alert not checked)")
        return

    def firing():
        alerts = _prom_get(am + "/api/v2/alerts?active=true&silenced=false&inhibited=false")
        return [a for a in alerts if a["labels"].get("alertname") == "CertificateRenewalFailing"
                and a["labels"].get("instance") == node.name]

    t0 = time.monotonic()
    halib.wait_until(firing, ALERT_TIMEOUT, f"CertificateRenewalFailing for {node.name} not in Alertmanager", interval=2)
    print(f"  CertificateRenewalFailing firing in Alertmanager after {time.monotonic() - t0:.0f}s")
