"""Backups proved by restoring them, on the live tier (molecule verify).

The tier archives WAL with dine360-backup to two targets at once: a volume shared by the
PostgreSQL containers (standing for a CephFS/NFS mount) and moto's S3 server on the
monitoring container. These tests run last in the suite (the final one replaces the
whole cluster with a point-in-time restore):

* b01 every node has the command; a switched segment lands in both targets; the first
  base backup exists; its metric reaches Prometheus;
* b02 rows written, the time noted, rows deleted: playbooks/restore.yml restores a scratch
  instance to the noted time and the rows are there; a time before the oldest backup is
  refused with nothing changed;
* b03 the primary is killed while WAL is being archived: the new primary archives the
  timeline history and the archive has no gap on either timeline;
* b04 the path target refuses writes: PostgreSQL keeps the segments, the failure shows in
  pg_stat_archiver and as the PostgresWalArchiveFailing alert, and archiving recovers by
  itself once the target takes writes again;
* b05 playbooks/restore_drill.yml restores the newest backup plus all WAL and records it;
* b06 one tenant's dump restored into a new database has the same row counts;
* b07 playbooks/restore.yml -e restore_mode=cluster: the whole cluster back to a noted time,
  every member streaming on a new timeline, and archiving continues.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
import time

import pytest

import halib

pytestmark = pytest.mark.run_last

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def playbook(topology, name: str, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", topology.inventory,
           os.path.join(ROOT, "playbooks", name), *extra]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800,
                          env=dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0"))
    if check and proc.returncode != 0:
        raise AssertionError(f"{name} {' '.join(extra)} failed rc={proc.returncode}:\n"
                             f"{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}")
    return proc


def cli(cluster, node, *args, check=True) -> subprocess.CompletedProcess:
    return cluster.dexec(node, ["/usr/local/bin/dine360-backup", *args], user="postgres", timeout=600, check=check)


def wal_lists(cluster, node) -> dict[str, list[str]]:
    return json.loads(cli(cluster, node, "wal-list").stdout)


def archived_everywhere(cluster, node, name: str) -> bool:
    lists = wal_lists(cluster, node)
    return len(lists) == len(cluster.topo.raw["backup_targets"]) and all(name in names for names in lists.values())


def switch_and_wait(cluster, primary, timeout: float = 90) -> str:
    """Close the current segment on the primary and wait until both targets have it."""
    seg = cluster.psql_value(primary, "SELECT pg_walfile_name(pg_switch_wal())")
    halib.wait_until(lambda: archived_everywhere(cluster, primary, seg), timeout,
                     f"segment {seg} archived to every target")
    return seg


def now_on(cluster, node) -> str:
    return cluster.psql_value(node, "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")


@pytest.fixture(scope="module")
def primary(cluster):
    cluster.wait_healthy(timeout=180)
    return cluster.wait_primary(timeout=60)


def test_b01_archive_and_first_base_backup(cluster, topology, primary):
    assert topology.raw.get("backup_targets"), "the scenario configures backup targets"
    for node in cluster.nodes:
        assert cli(cluster, node, "check").returncode == 0
    seg = switch_and_wait(cluster, primary)
    print(f"\n[b01] {seg} archived to {sorted(wal_lists(cluster, primary))}")
    listing = json.loads(cli(cluster, primary, "list").stdout)
    assert len(listing) == len(topology.raw["backup_targets"]) and all(len(b) >= 1 for b in listing.values()), listing
    first = list(listing.values())[0][0]
    # Roles change during the suite; what counts is the member's role when it took the backup.
    assert first.get("node_role") in ("replica", "sync_standby"), \
        f"the base backup was taken on {first['node']} as {first.get('node_role')}, not on a replica"
    assert cluster.psql_value(primary, "SELECT failed_count FROM pg_stat_archiver") == "0"
    prom = topology.raw.get("prometheus_url")
    if prom:
        import urllib.parse
        import urllib.request

        def metric():
            q = urllib.parse.urlencode({"query": 'dine360_backup_last_success_timestamp_seconds{kind="basebackup"}'})
            with urllib.request.urlopen(f"{prom}/api/v1/query?{q}", timeout=5) as r:
                return json.loads(r.read())["data"]["result"]
        halib.wait_until(metric, 60, "the base backup metric in Prometheus")


def test_b02_point_in_time_restore_into_a_scratch_instance(cluster, topology, primary):
    cluster.psql(primary, "DROP DATABASE IF EXISTS d360_pitr")
    cluster.psql(primary, "CREATE DATABASE d360_pitr")
    cluster.psql(primary, "CREATE TABLE orders (id int PRIMARY KEY, item text); "
                          "INSERT INTO orders SELECT g, 'pizza ' || g FROM generate_series(1, 250) g", db="d360_pitr")
    time.sleep(1.0)
    noted = now_on(cluster, primary)
    time.sleep(1.0)
    cluster.psql(primary, "DELETE FROM orders", db="d360_pitr")
    switch_and_wait(cluster, primary)
    host = next(n for n in cluster.nodes if n.name != primary.name)

    early = playbook(topology, "restore.yml", "-e", "restore_mode=scratch", "-e", f"restore_host={host.name}",
                     "-e", "restore_target_time=2020-01-01T00:00:00Z", check=False)
    said = early.stdout + early.stderr  # the failure goes to stderr under molecule's settings
    assert early.returncode != 0 and "before the oldest base backup" in said, said[-3000:]
    assert "Nothing was changed" in said

    t0 = time.monotonic()
    playbook(topology, "restore.yml", "-e", "restore_mode=scratch", "-e", f"restore_host={host.name}",
             "-e", f"restore_target_time={noted}")
    took = time.monotonic() - t0
    sock = "/var/lib/dine360/backup/scratch/pitr/sock"
    count = cluster.dexec(host, ["psql", "-XAtq", "-h", sock, "-p", "5499", "-d", "d360_pitr", "-c",
                                 "SELECT count(*) FROM orders"], user="postgres").stdout.strip()
    print(f"\n[b02] restored to {noted} on {host.name}: {count} orders back (playbook {took:.1f} s)")
    assert count == "250"
    playbook(topology, "restore.yml", "-e", "restore_mode=scratch-stop", "-e", f"restore_host={host.name}")
    assert cluster.dexec(host, ["test", "-e", "/var/lib/dine360/backup/scratch/pitr/data"], check=False).returncode != 0


def _segments(names: list[str], timeline: int) -> list[int]:
    tl = f"{timeline:08X}"
    return sorted(int(n[8:16], 16) * 256 + int(n[16:24], 16) for n in names if len(n) == 24 and n.startswith(tl))


def test_b03_failover_mid_archive_leaves_no_gap(cluster, topology, primary):
    old_tl = int(cluster.psql_value(primary, "SELECT timeline_id FROM pg_control_checkpoint()"))
    cluster.psql(primary, "DROP TABLE IF EXISTS churn; CREATE TABLE churn (x text)", db="d360_pitr")
    # About 5 segments of WAL, then the primary dies while they are being archived.
    cluster.psql(primary, "INSERT INTO churn SELECT repeat(md5(g::text), 20) FROM generate_series(1, 120000) g",
                 db="d360_pitr", timeout=180)
    cluster.kill(primary)
    t0 = time.monotonic()
    new = cluster.wait_primary(timeout=90, exclude=[primary.name])
    print(f"\n[b03] killed {primary.name} mid-archive; {new.name} primary after {time.monotonic() - t0:.1f} s")
    new_tl = int(cluster.psql_value(new, "SELECT timeline_id FROM pg_control_checkpoint()"))
    halib.wait_until(lambda: int(cluster.psql_value(new, "SELECT timeline_id FROM pg_control_checkpoint()")) > old_tl,
                     60, "a checkpoint on the new timeline")
    new_tl = int(cluster.psql_value(new, "SELECT timeline_id FROM pg_control_checkpoint()"))
    cluster.psql(new, "INSERT INTO churn SELECT repeat(md5(g::text), 20) FROM generate_series(1, 30000) g", db="d360_pitr")
    last = switch_and_wait(cluster, new)
    history = f"{new_tl:08X}.history"
    halib.wait_until(lambda: archived_everywhere(cluster, new, history), 60, f"{history} archived")
    cluster.start(primary)
    for target, names in wal_lists(cluster, new).items():
        old = _segments(names, old_tl)
        newer = _segments(names, new_tl)
        assert newer, f"{target}: nothing archived on timeline {new_tl}"
        assert newer == list(range(newer[0], newer[-1] + 1)), f"{target}: gap on timeline {new_tl}: {newer}"
        assert newer[-1] == int(last[8:16], 16) * 256 + int(last[16:24], 16)
        # The old timeline is complete up to where the new one branched off.
        assert old and old == list(range(old[0], old[-1] + 1)), f"{target}: gap on timeline {old_tl}"
        assert old[-1] >= newer[0] - 1, f"{target}: old timeline stops at {old[-1]:X}, new starts at {newer[0]:X}"
        print(f"[b03] {target}: timeline {old_tl} segments {old[0]:X}..{old[-1]:X}, "
              f"timeline {new_tl} {newer[0]:X}..{newer[-1]:X}, {history} present, no gap")
    cluster.wait_healthy(timeout=240)


def test_b04_a_target_that_refuses_writes(cluster, topology):
    primary = cluster.wait_primary(timeout=60)
    wal_dir = f"/mnt/backup/{topology.raw['backup_cluster']}/wal"
    failed0 = int(cluster.psql_value(primary, "SELECT failed_count FROM pg_stat_archiver"))
    cluster.dexec(primary, ["chmod", "0555", wal_dir])
    try:
        seg = cluster.psql_value(primary, "SELECT pg_walfile_name(pg_switch_wal())")
        halib.wait_until(lambda: int(cluster.psql_value(primary, "SELECT failed_count FROM pg_stat_archiver")) > failed0,
                         60, "archive failures counted in pg_stat_archiver")
        ready = cluster.dexec(primary, ["ls", "/var/lib/postgresql/15/data/pg_wal/archive_status"], user="postgres").stdout
        assert f"{seg}.ready" in ready, f"PostgreSQL no longer keeps {seg}: {ready}"
        assert not archived_everywhere(cluster, primary, seg)
        if topology.raw.get("prometheus_url"):
            from test_monitoring import wait_alert
            name, secs = wait_alert(topology, ["PostgresWalArchiveFailing"], "wal_archive", instance=primary.name)
            print(f"\n[b04] {name} fired {secs:.0f} s after the target refused writes")
    finally:
        cluster.dexec(primary, ["chmod", "0755", wal_dir])
    t0 = time.monotonic()
    halib.wait_until(lambda: archived_everywhere(cluster, primary, seg), 180, f"{seg} archived after the target recovered")
    print(f"[b04] archiving recovered by itself {time.monotonic() - t0:.1f} s after the target took writes again")
    halib.wait_until(lambda: f"{seg}.ready" not in cluster.dexec(
        primary, ["ls", "/var/lib/postgresql/15/data/pg_wal/archive_status"], user="postgres").stdout, 60, "no .ready left")


def test_b05_restore_drill(cluster, topology):
    out = playbook(topology, "restore_drill.yml").stdout
    assert re.search(r'"?ok"?: true', out), out[-3000:]
    secs = re.search(r'"?seconds"?: ([0-9.]+)', out)
    replayed = re.search(r'"?replayed_to"?: "?([0-9A-F.a-z]+)', out)
    print(f"\n[b05] restore drill ok in {secs.group(1) if secs else '?'} s, replayed to "
          f"{replayed.group(1) if replayed else '?'}")


def test_b06_tenant_dump_restored_into_a_new_database(cluster, topology):
    primary = cluster.wait_primary(timeout=60)
    tenants = [t["name"] for t in topology.raw.get("saas_tenants", []) if t.get("state", "present") == "present"]
    if not tenants:
        pytest.skip("no tenant in the scenario's saas_tenants")
    tenant = tenants[0]
    # The tenant suite may have offboarded it: onboarding is idempotent and brings it back.
    playbook(topology, "tenants.yml", "--tags", "onboard", "-e", f"tenant={tenant}")
    cluster.psql(primary, "CREATE TABLE IF NOT EXISTS dump_probe (id int); TRUNCATE dump_probe; "
                          "INSERT INTO dump_probe SELECT generate_series(1, 321)", db=tenant)
    switch_and_wait(cluster, primary)
    time.sleep(2)  # the replica the dump is taken from has replayed it (synchronous mode)
    playbook(topology, "tenants.yml", "--tags", "dump", "-e", f"tenant={tenant}")
    copy = f"{tenant}-restored"
    playbook(topology, "tenants.yml", "--tags", "restore", "-e", f"tenant={tenant}", "-e", f"restore_as={copy}")
    exact = "SELECT count(*) FROM dump_probe"
    assert cluster.psql_value(primary, exact, db=copy) == cluster.psql_value(primary, exact, db=tenant) == "321"
    tables = cluster.psql_value(primary, "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')", db=copy)
    print(f"\n[b06] {tenant} dumped and restored as {copy}: {tables} tables, dump_probe 321 rows in both")
    cluster.psql(primary, f'DROP DATABASE "{copy}" WITH (FORCE)')


def test_b07_whole_cluster_point_in_time_restore(cluster, topology):
    primary = cluster.wait_primary(timeout=60)
    cluster.psql(primary, "CREATE TABLE receipts (id int PRIMARY KEY); "
                          "INSERT INTO receipts SELECT generate_series(1, 777)", db="d360_pitr")
    switch_and_wait(cluster, primary)
    time.sleep(1.0)
    noted = now_on(cluster, primary)
    time.sleep(1.0)
    cluster.psql(primary, "DROP TABLE receipts", db="d360_pitr")
    tl_before = int(cluster.psql_value(primary, "SELECT timeline_id FROM pg_control_checkpoint()"))
    switch_and_wait(cluster, primary)
    t0 = time.monotonic()
    playbook(topology, "restore.yml", "-e", "restore_mode=cluster", "-e", f"restore_target_time={noted}",
             "-e", f"restore_confirm={topology.raw['backup_cluster']}")
    took = time.monotonic() - t0
    members = cluster.wait_healthy(timeout=300)
    new_primary = cluster.wait_primary(timeout=60)
    assert cluster.psql_value(new_primary, "SELECT count(*) FROM receipts", db="d360_pitr") == "777"
    tl_after = int(cluster.psql_value(new_primary, "SELECT timeline_id FROM pg_control_checkpoint()"))
    assert tl_after > tl_before
    assert len([m for m in members if m.state in ("running", "streaming")]) == len(cluster.nodes)
    # Through the VIP and PgBouncer, and archiving continues on the new timeline.
    seg = switch_and_wait(cluster, new_primary, timeout=120)
    print(f"\n[b07] cluster restored to {noted} in {took:.0f} s (playbook): receipts back, timeline "
          f"{tl_before} -> {tl_after}, {len(members)} members streaming, {seg} archived")
    cluster.psql(new_primary, "DROP DATABASE IF EXISTS d360_pitr")
