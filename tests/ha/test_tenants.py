"""Tenant lifecycle on the live tier: onboard by tag, connect through the VIP, suspend,
resume and offboard, isolation between tenants and groups, bad lists change nothing.

Each step runs the real ``playbooks/tenants.yml`` against the scenario's inventory with
the tenant list passed as extra vars (what an operator's edit of ``saas_tenants`` does),
then checks with real clients through HAProxy's write and read ports and PgBouncer.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import psycopg2
import pytest

from ansible.plugins.loader import init_plugin_loader
from ansible.utils.collection_loader import AnsibleCollectionConfig

import halib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if AnsibleCollectionConfig.collection_finder is None:
    init_plugin_loader([os.path.join(ROOT, "collections")])

from ansible_collections.dine360.saas.plugins.module_utils.tenants import derive_password  # noqa: E402

QA_GROUP = "qa-vip"
A, B, C = "qa-alpha", "qa-bravo", "qa-charlie"


class Tenants:
    """The tenant list the tests edit, and runs of playbooks/tenants.yml with it."""

    def __init__(self, topo: halib.Topology, tmpdir: str):
        self.topo = topo
        self.seed = topo.saas_password_seed
        self.base = [dict(t) for t in topo.saas_tenants]
        self.groups = dict(topo.saas_groups)
        self.groups[QA_GROUP] = {"app_role": "odoo_qa_vip", "max_connections": 20}
        self.app_role = {g: v["app_role"] for g, v in self.groups.items()}
        self.extra = []
        self.tmpdir = tmpdir

    def entry(self, name: str) -> dict:
        return next(t for t in self.extra if t["name"] == name)

    def set_list(self, entries: list[dict]) -> None:
        self.extra = entries

    def run(self, tags: str | None = None, tenant: str | None = None, entries: list | None = None,
            extra_vars: dict | None = None) -> tuple[int, str, float]:
        ev = {"saas_tenants": self.base + (self.extra if entries is None else entries),
              "saas_groups": self.groups}
        ev.update(extra_vars or {})
        path = os.path.join(self.tmpdir, "tenants-extra.json")
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(ev, fh)
        os.chmod(path, 0o600)
        cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"),
               "-i", self.topo.inventory, "playbooks/tenants.yml", "-e", f"@{path}"]
        if tags:
            cmd += ["--tags", tags]
        if tenant:
            cmd += ["-e", f"tenant={tenant}"]
        t0 = time.monotonic()
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                           env=dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0"))
        return p.returncode, p.stdout + p.stderr, time.monotonic() - t0

    def app_password(self, group: str) -> str:
        return derive_password(self.seed, "app", group)

    def report_password(self, tenant: str) -> str:
        return derive_password(self.seed, "report", tenant)


def recap_changed(out: str) -> int:
    return sum(int(c) for c in re.findall(r"changed=(\d+)", out))


@pytest.fixture(scope="module")
def tenants(topology, tmp_path_factory) -> Tenants:
    if not topology.raw.get("saas_password_seed"):
        pytest.fail("the topology has no saas_password_seed: regenerate it with tools/topology.yml")
    t = Tenants(topology, str(tmp_path_factory.mktemp("tenants")))
    return t


def connect(cluster, port: int, db: str, user: str, password: str):
    conn = psycopg2.connect(cluster.dsn(port, db, user, password, connect_timeout=10))
    conn.autocommit = True
    return conn


def databases(cluster) -> list[str]:
    primary = cluster.wait_primary(60)
    return sorted(r[0] for r in cluster.psql(primary, "SELECT datname FROM pg_database"))


def assert_refused(cluster, port, db, user, password, why=("permission denied", "server login")):
    with pytest.raises(psycopg2.OperationalError) as err:
        connect(cluster, port, db, user, password).close()
    assert any(w in str(err.value) for w in why), str(err.value)


def test_t01_onboard_by_tag(cluster, tenants, state):
    cluster.wait_healthy(120)
    tenants.set_list([
        {"name": A, "plan": "starter", "group": "core", "state": "present"},
        {"name": B, "plan": "premium", "group": "core", "state": "present"},
        {"name": C, "plan": "starter", "group": QA_GROUP, "state": "present"},
    ])
    # One restaurant, as the README shows it.
    rc, out, secs = tenants.run(tags="onboard", tenant=A)
    assert rc == 0, out[-4000:]
    dbs = databases(cluster)
    assert A in dbs and B not in dbs and C not in dbs, dbs
    print(f"\nonboarded {A} with --tags onboard -e tenant={A} in {secs:.1f}s (whole playbook run)")

    # A client of an existing tenant stays connected while PgBouncer is reloaded.
    keep = connect(cluster, cluster.topo.write_port, A, tenants.app_role["core"], tenants.app_password("core"))
    with keep.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS qa_order (id serial PRIMARY KEY, total numeric)")
        cur.execute("INSERT INTO qa_order (total) VALUES (10), (20), (30)")
    state_before = _tier_state(cluster)

    rc, out, secs = tenants.run(tags="onboard")
    assert rc == 0, out[-4000:]
    dbs = databases(cluster)
    assert {A, B, C} <= set(dbs), dbs
    print(f"onboarded {B} and {C} with --tags onboard (whole list) in {secs:.1f}s")
    try:
        with keep.cursor() as cur:
            cur.execute("SELECT count(*) FROM qa_order")
            assert cur.fetchone()[0] == 3, "a client connection did not survive PgBouncer's reload"
    except psycopg2.OperationalError as exc:
        # Say what dropped it: a failover (new timeline), a restarted PgBouncer or HAProxy.
        pytest.fail(f"a client connection of {A} did not survive the onboard run ({exc}); "
                    f"tier before the run {state_before}, after {_tier_state(cluster)}; "
                    f"the run's end:\n{out[-2500:]}")
    keep.close()
    assert _main_pids(cluster, "pgbouncer") == state_before["pgbouncer"], "PgBouncer was restarted, not reloaded"

    # The premium tenant has its own pool size on every node (the others use the wildcard).
    for node in cluster.topo.nodes:
        rows = {r["name"]: r for r in cluster.pgbouncer_admin(node, "SHOW DATABASES")}
        assert B in rows and int(rows[B]["pool_size"]) == 20, rows.get(B)

    rc, out, _ = tenants.run(tags="onboard")
    assert rc == 0 and recap_changed(out) == 0, "second onboard run changed something:\n" + out[-4000:]


def _tier_state(cluster) -> dict:
    primary = cluster.find_primary()
    _, info = cluster.patroni_http(primary, "/patroni") if primary else (None, None)
    return {"primary": primary.name if primary else None,
            "timeline": info.get("timeline") if isinstance(info, dict) else None,
            "pgbouncer": _main_pids(cluster, "pgbouncer"), "haproxy": _main_pids(cluster, "haproxy")}


def _main_pids(cluster, unit: str) -> list[str]:
    return [cluster.dexec(n, ["systemctl", "show", "-p", "MainPID", "--value", unit]).stdout.strip()
            for n in cluster.topo.nodes]


def test_t02_write_and_read_endpoints(cluster, tenants):
    topo = cluster.topo
    for name, group in [(A, "core"), (B, "core"), (C, QA_GROUP)]:
        w = connect(cluster, topo.write_port, name, tenants.app_role[group], tenants.app_password(group))
        with w.cursor() as cur:
            cur.execute("SELECT pg_is_in_recovery(), current_database()")
            assert cur.fetchone() == (False, name)
            cur.execute("CREATE TABLE IF NOT EXISTS menu_item (id serial PRIMARY KEY, label text)")
            cur.execute("INSERT INTO menu_item (label) VALUES (%s)", (f"dish of {name}",))
        w.close()

        def replicated():
            r = connect(cluster, topo.read_port, name, f"{name}_report", tenants.report_password(name))
            try:
                with r.cursor() as cur:
                    cur.execute("SELECT pg_is_in_recovery(), count(*) FROM menu_item")
                    return cur.fetchone()
            finally:
                r.close()

        got = halib.wait_until(lambda: (lambda v: v if v and v[1] >= 1 else None)(_try(replicated)), 30,
                               f"{name}: the reporting role never saw the row on the read port")
        assert got[0] is True, f"{name}: the read port answered from the primary"
        r = connect(cluster, topo.read_port, name, f"{name}_report", tenants.report_password(name))
        with pytest.raises(psycopg2.Error, match="read-only"):
            r.cursor().execute("INSERT INTO menu_item (label) VALUES ('x')")
        r.close()
    print(f"\n{A}, {B}, {C}: written through :{topo.write_port}, read by each reporting role through "
          f":{topo.read_port} on a replica")


def _try(fn):
    try:
        return fn()
    except psycopg2.Error:
        return None


def test_t03_isolation(cluster, tenants):
    topo = cluster.topo
    # Tenant A's reporting credentials never reach tenant B's (or any other) database.
    for port in (topo.write_port, topo.read_port):
        for other in (B, C, "postgres"):
            assert_refused(cluster, port, other, f"{A}_report", tenants.report_password(A))
    # One group's application role cannot connect to another group's databases.
    assert_refused(cluster, topo.write_port, C, tenants.app_role["core"], tenants.app_password("core"))
    assert_refused(cluster, topo.write_port, A, tenants.app_role[QA_GROUP], tenants.app_password(QA_GROUP))
    # Checked on the primary too, without PgBouncer in between.
    primary = cluster.wait_primary(30)
    out = cluster.psql(primary, f"SELECT has_database_privilege('{A}_report', '{B}', 'CONNECT'), "
                                f"has_database_privilege('odoo_qa_vip', '{A}', 'CONNECT'), "
                                f"has_database_privilege('{tenants.app_role['core']}', '{C}', 'CONNECT')")
    assert out == [["f", "f", "f"]], out


BAD_ENTRIES = [
    {"name": "Upper", "plan": "starter", "group": "core"},
    {"name": "9lives", "plan": "starter", "group": "core"},
    {"name": "x" * 42, "plan": "starter", "group": "core"},
    {"name": 'a"; drop database x; --', "plan": "starter", "group": "core"},
    {"name": "template1", "plan": "starter", "group": "core"},
    {"name": "qa-new", "plan": "platinum", "group": "core"},
    {"name": A, "plan": "starter", "group": "core"},
]


def test_t04_bad_list_changes_nothing(cluster, tenants):
    before = databases(cluster)
    good_new = {"name": "qa-good-new", "plan": "starter", "group": "core", "state": "present"}
    rc, out, _ = tenants.run(entries=tenants.extra + [good_new] + BAD_ENTRIES)
    assert rc != 0, out[-3000:]
    for frag in ["'Upper'", "'9lives'", "'" + "x" * 42 + "'", "drop database x", "'template1': a reserved name",
                 "unknown plan 'platinum'", "duplicate of saas_tenants"]:
        assert frag in out, f"{frag!r} not named in the error:\n{out[-4000:]}"
    assert recap_changed(out) == 0, out[-3000:]
    assert databases(cluster) == before, "a bad list changed the databases"


def test_t05_suspend_and_resume(cluster, tenants):
    topo = cluster.topo
    # An open session (asynchronous, so the client can give up): through PgBouncer its next query
    # either errors or waits for a server connection that the suspended database refuses
    # (query_wait_timeout, 120 s by default); 15 s without rows is proof enough.
    session = halib.connect_with_deadline(
        cluster.dsn(topo.write_port, B, tenants.app_role["core"], tenants.app_password("core")), 10)
    assert halib.query_with_deadline(session, "SELECT count(*) FROM menu_item", timeout=10)[0][0] >= 1
    tenants.entry(B)["state"] = "suspended"
    rc, out, secs = tenants.run(tags="suspend", tenant=B)
    assert rc == 0, out[-4000:]
    print(f"\nsuspended {B} in {secs:.1f}s")
    with pytest.raises((psycopg2.Error, TimeoutError)):
        halib.query_with_deadline(session, "SELECT count(*) FROM menu_item", timeout=15)
    session.close()
    # PostgreSQL refuses the database outright; through PgBouncer (1.18) a client of a
    # suspended tenant gets no session either: its password lookup runs in the refused
    # database, so it errors or waits until it gives up (docs/tenants.md).
    primary = cluster.wait_primary(30)
    direct = cluster.dsn(5432, B, tenants.app_role["core"], tenants.app_password("core"), connect_timeout=5,
                         host=primary.address)
    with pytest.raises(psycopg2.OperationalError, match="not currently accepting connections"):
        psycopg2.connect(direct).close()
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(cluster.dsn(topo.write_port, B, tenants.app_role["core"], tenants.app_password("core"),
                                     connect_timeout=5)).close()
    # Others are untouched.
    connect(cluster, topo.write_port, A, tenants.app_role["core"], tenants.app_password("core")).close()
    # An onboarding run of the whole list leaves the suspended tenant suspended.
    rc, out, _ = tenants.run(tags="onboard")
    assert rc == 0 and recap_changed(out) == 0, out[-3000:]

    tenants.entry(B)["state"] = "present"
    rc, out, secs = tenants.run(tags="resume", tenant=B)
    assert rc == 0, out[-4000:]
    print(f"resumed {B} in {secs:.1f}s")

    def back():
        c = connect(cluster, topo.write_port, B, tenants.app_role["core"], tenants.app_password("core"))
        with c.cursor() as cur:
            cur.execute("SELECT count(*) FROM menu_item")
            n = cur.fetchone()[0]
        c.close()
        return n

    # PgBouncer may hold back a pool whose server logins failed for server_login_retry seconds.
    assert halib.wait_until(lambda: _try(back), 30, f"{B} did not come back after resume") >= 1


def test_t06_offboard(cluster, tenants):
    tenants.entry(C)["state"] = "absent"
    # Without the final dump that offboarding takes first, the drop is refused.
    rc, out, _ = tenants.run(tags="offboard", tenant=C, extra_vars={"tenants_dump_before_offboard": False})
    assert rc != 0 and "no final backup is recorded" in out, out[-3000:]
    assert C in databases(cluster), "a refused offboard dropped the database"

    if cluster.topo.raw.get("backup_targets"):
        # With backup targets, offboarding takes a final dump to every target, records it
        # on the primary, and only then drops the database.
        rc, out, secs = tenants.run(tags="offboard", tenant=C)
        assert rc == 0, out[-4000:]
        primary = cluster.wait_primary(30)
        kinds = cluster.psql_value(primary, "SELECT string_agg(DISTINCT kind, ',') FROM dine360.tenant_backups "
                                            f"WHERE datname = '{C}'")
        assert "final" in kinds, kinds
        print(f"\noffboarded {C} after its final dump in {secs:.1f}s")
    else:
        rc, out, secs = tenants.run(tags="offboard", tenant=C, extra_vars={"tenants_force_offboard": True})
        assert rc == 0, out[-4000:]
        print(f"\noffboarded {C} (forced, no final backup) in {secs:.1f}s")
    assert C not in databases(cluster)
    primary = cluster.wait_primary(30)
    assert cluster.psql_value(primary, f"SELECT count(*) FROM pg_roles WHERE rolname = '{C}_report'") == "0"


def test_t07_cleanup_offboards_the_rest(cluster, tenants):
    for t in tenants.extra:
        t["state"] = "absent"
    rc, out, _ = tenants.run(tags="offboard", extra_vars={"tenants_force_offboard": True})
    assert rc == 0, out[-4000:]
    dbs = databases(cluster)
    assert not {A, B, C} & set(dbs), dbs
    for node in cluster.topo.nodes:
        rows = {r["name"] for r in cluster.pgbouncer_admin(node, "SHOW DATABASES")}
        assert B not in rows, f"{node.name}: PgBouncer still has the offboarded tenant's pool"
