"""Monitoring on the live tier: every target scraped, every dashboard query answered, and
real faults making real alerts fire in Alertmanager.

The faults: a replica's Patroni stopped, PgBouncer stopped on a node, a filesystem on a
node filled. Each test waits for the alert in Alertmanager's API (not Prometheus's), then
repairs the fault and waits for the tier to be healthy again. The alert names come from
the prometheus role's rule template (tests/test_alert_rules.py checks the rules).
"""

from __future__ import annotations

import glob
import json
import os
import time
import urllib.parse
import urllib.request

import pytest

import halib

ALERT_TIMEOUT = 180.0


def _get(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - lab/CI addresses only
        return json.loads(resp.read().decode())


@pytest.fixture(scope="module")
def prom(topology):
    url = topology.raw.get("prometheus_url")
    if not url:
        pytest.skip("the topology has no monitoring host (inventory group 'monitoring')")
    halib.wait_until(lambda: _get(url + "/api/v1/status/buildinfo"), 60,
                     "Prometheus did not answer")
    return url


def query(prom: str, expr: str) -> list:
    data = _get(prom + "/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    assert data["status"] == "success", data
    return data["data"]["result"]


def firing(topology, name: str, **labels) -> list:
    alerts = _get(topology.alertmanager_url + "/api/v2/alerts?active=true&silenced=false&inhibited=false")
    return [a for a in alerts if a["labels"].get("alertname") == name
            and all(a["labels"].get(k) == v for k, v in labels.items())]


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    for suffix in ("ms", "s", "m", "h", "d"):
        if duration.endswith(suffix) and duration[:-len(suffix)].isdigit():
            return float(duration[:-len(suffix)]) * units[suffix]
    return 300.0


def wait_alert(topology, names: list[str], group: str, **labels) -> tuple[str, float]:
    """Wait for one of ``names`` in Alertmanager: the rule group's ``for:`` plus slack."""
    t0 = time.monotonic()
    timeout = ALERT_TIMEOUT + _seconds(str(topology.raw.get("alert_for", {}).get(group, "5m")))

    def seen():
        for n in names:
            if firing(topology, n, **labels):
                return n
        return None

    name = halib.wait_until(seen, timeout, f"none of {names} {labels} reached Alertmanager", interval=2)
    return name, time.monotonic() - t0


def targets(prom: str) -> list[dict]:
    data = _get(prom + "/api/v1/targets?state=active")
    return [{"job": t["labels"]["job"], "instance": t["labels"]["instance"], "health": t["health"],
             "error": t.get("lastError", "")} for t in data["data"]["activeTargets"]]


def test_m01_every_target_is_scraped(prom, topology):
    expected_jobs = {"node", "postgres", "pgbouncer", "patroni", "etcd", "haproxy", "prometheus", "alertmanager"}

    def all_up():
        ts = targets(prom)
        down = [f'{t["job"]}/{t["instance"]}: {t["error"]}' for t in ts if t["health"] != "up"]
        missing = expected_jobs - {t["job"] for t in ts}
        return (not down and not missing) or None

    try:
        halib.wait_until(all_up, 120, "some targets are down or missing")
    except AssertionError:
        pytest.fail(f"targets not all up: {[t for t in targets(prom) if t['health'] != 'up']}")
    by_job: dict[str, int] = {}
    for t in targets(prom):
        by_job[t["job"]] = by_job.get(t["job"], 0) + 1
    nodes = len(topology.nodes)
    assert by_job["postgres"] == nodes and by_job["pgbouncer"] == nodes and by_job["patroni"] == nodes
    assert by_job["node"] >= nodes + 1, by_job  # the DB nodes and the monitoring host
    instances = {t["instance"] for t in targets(prom) if t["job"] == "patroni"}
    assert instances == {n.name for n in topology.nodes}, instances
    print(f"\ntargets up: {dict(sorted(by_job.items()))}")


def test_m02_every_dashboard_query_returns_data(prom, topology):
    files = sorted(glob.glob(os.path.join(topology.grafana_dashboards, "*.json")))
    assert files, f"no dashboards in {topology.grafana_dashboards}"
    empty, count = [], 0
    # Series that need a little history (rates, changes) get it before the check.
    time.sleep(10)
    for path in files:
        with open(path, encoding="utf-8") as fh:
            dash = json.load(fh)
        for panel in dash["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"].replace("$__rate_interval", "1m").replace("$__interval", "1m")
                count += 1
                try:
                    res = halib.wait_until(lambda e=expr: query(prom, e), 30, f"no data for {expr}")
                except AssertionError:
                    res = []
                if not res:
                    empty.append(f'{dash["uid"]} / {panel["title"]}: {expr}')
    print(f"\n{count} panel queries in {len(files)} dashboards answered by Prometheus")
    assert not empty, "panels whose query returns nothing:\n" + "\n".join(empty)


def test_m03_stopped_replica_fires_an_alert(cluster, topology, prom):
    cluster.wait_healthy(120)
    leader = cluster.leader_member()
    replica = next(n for n in topology.nodes if n.name != leader.name)
    cluster.systemctl(replica, "stop", "patroni")
    try:
        name, secs = wait_alert(topology, ["PatroniMemberDown", "PostgresReplicaNotStreaming"], "patroni",
                                instance=replica.name)
        print(f"\npatroni stopped on {replica.name}: {name} firing in Alertmanager after {secs:.0f}s")
    finally:
        cluster.systemctl(replica, "start", "patroni")
        cluster.wait_healthy(180)


def test_m04_stopped_pgbouncer_fires_an_alert(cluster, topology, prom):
    node = topology.nodes[-1]
    cluster.systemctl(node, "stop", "pgbouncer")
    try:
        name, secs = wait_alert(topology, ["PgBouncerDown"], "pgbouncer", instance=node.name)
        print(f"\npgbouncer stopped on {node.name}: {name} firing after {secs:.0f}s; "
              f"the exporter still answers with pgbouncer_up 0")
        up = query(prom, f'pgbouncer_up{{instance="{node.name}"}}')
        assert up and up[0]["value"][1] == "0", up
    finally:
        cluster.systemctl(node, "start", "pgbouncer")
    halib.wait_until(lambda: query(prom, f'pgbouncer_up{{instance="{node.name}"}} == 1'), 60,
                     "pgbouncer_up did not come back")


def test_m05_filling_a_filesystem_fires_disk_alerts(cluster, topology, prom):
    node = topology.nodes[1]
    mnt = "/mnt/d360-fill"
    cluster.dexec(node, ["mkdir", "-p", mnt])
    cluster.dexec(node, ["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", mnt])
    try:
        cluster.dexec(node, ["fallocate", "-l", "19M", f"{mnt}/ballast"])
        name, secs = wait_alert(topology, ["HostDiskUsageCritical", "HostDiskAlmostFull"], "disk",
                                instance=node.name, mountpoint=mnt)
        print(f"\n{mnt} on {node.name} filled to 95%: {name} firing after {secs:.0f}s")
    finally:
        cluster.dexec(node, ["umount", mnt], check=False)


def test_m06_config_that_does_not_parse_never_replaces_the_running_one(topology, prom, tmp_path):
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    container = topology.monitoring_container

    def config_sum():
        out = subprocess.run(["docker", "exec", container, "sha256sum", "/etc/prometheus/prometheus.yml"],
                             capture_output=True, text=True, check=True).stdout
        return out.split()[0]

    before = config_sum()
    p = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", topology.inventory,
                        "playbooks/monitoring.yml", "--tags", "prometheus_config",
                        "-e", "prometheus_scrape_interval=not-a-duration"],
                       cwd=root, capture_output=True, text=True, timeout=600)
    out = p.stdout + p.stderr
    assert p.returncode != 0, out[-3000:]
    assert "failed to validate" in out or "promtool" in out, out[-3000:]
    assert config_sum() == before, "a configuration promtool rejected replaced the running one"
    assert _get(prom + "/api/v1/status/buildinfo")["status"] == "success"
