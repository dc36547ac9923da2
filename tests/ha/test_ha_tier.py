"""Live tests of the HA PostgreSQL tier: etcd + Patroni + PostgreSQL 15 + PgBouncer +
HAProxy + keepalived VIP.

The tests run in file order and build on one another:
01 shape -> 02 data paths -> 03 pooling (read-only for the tier) ->
04 failover (kills the primary) -> 05 rejoin (starts it again) -> 06 switchover ->
07 PgBouncer stopped on the primary -> 08 VIP move.
Run with ``pytest tests/ha -s -v``; measured figures are printed.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import threading
import time
import uuid

import psycopg2
import psycopg2.errors
import pytest

import halib

MAX_FAILOVER_OUTAGE_S = 30.0
MAX_SWITCHOVER_OUTAGE_S = 30.0
HAPROXY_DETECT_S = 12.0      # "within ~10 s" plus one poll of slack
REJOIN_TIMEOUT_S = 120.0


def _connect(cluster, tdb, port, dbname=None, **extra):
    conn = psycopg2.connect(cluster.dsn(port, dbname or tdb.dbname, tdb.user, tdb.password,
                                        **extra))
    conn.autocommit = True
    return conn


def _one(conn, sql, params=None):
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchone()


def _write_once(cluster, tdb, note):
    conn = _connect(cluster, tdb, cluster.topo.write_port)
    try:
        return _one(conn, "INSERT INTO ticks (client_ts, note) VALUES (now(), %s) RETURNING id",
                    (note,))[0]
    finally:
        conn.close()


def _print_members(cluster, title):
    print(f"\n{title}")
    for m in cluster.members():
        print(f"  {m.name:<12} {m.role:<13} {m.state:<10} TL={m.tl} lag_mb={m.lag_mb!r}")


# ---------------------------------------------------------------------------- 1. shape


def test_01_cluster_shape(cluster):
    n = len(cluster.nodes)

    # A freshly deployed tier may still be settling: give it a bounded minute.
    cluster.wait_healthy(60)
    members = cluster.members()
    _print_members(cluster, "patronictl list:")

    leaders = [m for m in members if m.is_leader]
    replicas = [m for m in members if m.is_replica]
    assert len(leaders) == 1, f"expected exactly one Leader, got {members}"
    assert len(replicas) == n - 1, f"expected {n - 1} replicas, got {members}"
    assert all(m.state in ("running", "streaming") for m in replicas), members
    assert len({m.tl for m in members}) == 1 and leaders[0].tl is not None, \
        f"members on different timelines: {[(m.name, m.tl) for m in members]}"
    if cluster.topo.synchronous_mode:
        assert any(m.role == "sync standby" for m in replicas), \
            f"synchronous_mode is on but no member is a Sync Standby: {members}"

    primary = cluster.find_primary()
    assert primary is not None, "no node answers 200 on Patroni's /primary"
    assert primary.name == leaders[0].name, \
        f"/primary says {primary.name}, patronictl says {leaders[0].name}"
    streaming = cluster.streaming_count(primary)
    print(f"primary {primary.name}: {streaming} replicas streaming (pg_stat_replication)")
    assert streaming == n - 1

    etcd_members = cluster.etcd_members()
    health = cluster.etcd_health()
    print(f"etcd: {len(etcd_members)} members; health: "
          f"{[(h['endpoint'], h['health']) for h in health]}")
    assert len(etcd_members) == n, f"etcd member list: {etcd_members}"
    assert len(health) == n and all(h["health"] for h in health), f"etcd health: {health}"


# ---------------------------------------------------------------------------- 2. data paths


def test_02a_write_path_reaches_primary_through_pgbouncer(cluster, tdb):
    primary = cluster.wait_primary(30)
    starts = cluster.postmaster_starts()
    note = f"probe-{uuid.uuid4()}"

    conn = halib.wait_until(lambda: _connect(cluster, tdb, cluster.topo.write_port), 20,
                            f"connect to VIP {cluster.topo.vip}:{cluster.topo.write_port}")
    try:
        in_recovery, started, pid = _one(
            conn, "SELECT pg_is_in_recovery(), pg_postmaster_start_time()::text, pg_backend_pid()")
        new_id = _one(conn, "INSERT INTO ticks (client_ts, note) VALUES (now(), %s) RETURNING id",
                      (note,))[0]
    finally:
        conn.close()

    served_by = starts.get(started)
    print(f"\nwrite port served by {served_by} (backend pid {pid}), in_recovery={in_recovery}")
    assert in_recovery is False, "write port reached a server in recovery"
    assert served_by == primary.name, \
        f"write port reached {served_by}, the primary is {primary.name}"
    rows = cluster.psql(primary, f"SELECT id FROM ticks WHERE note = '{note}'", db=tdb.dbname)
    assert rows == [[str(new_id)]], f"row {new_id} not on the primary: {rows}"

    # PgBouncer is in the path: the backend that served us is one of the server
    # connections of the primary's PgBouncer.
    servers = cluster.pgbouncer_admin(primary, "SHOW SERVERS")
    pids = {int(s["remote_pid"]) for s in servers
            if s.get("database") == tdb.dbname and str(s.get("remote_pid") or "0") != "0"}
    print(f"PgBouncer on {primary.name}: server pids for {tdb.dbname}: {sorted(pids)}")
    assert pid in pids, (f"backend {pid} is not a server connection of PgBouncer on "
                         f"{primary.name}: the write port bypasses PgBouncer?")


def test_02b_read_path_reaches_a_replica(cluster, tdb):
    primary = cluster.wait_primary(30)
    starts = cluster.postmaster_starts()
    # The role was just created: give replication and PgBouncer auth a moment.
    conn = halib.wait_until(lambda: _connect(cluster, tdb, cluster.topo.read_port), 20,
                            f"connect to VIP {cluster.topo.vip}:{cluster.topo.read_port}")
    try:
        in_recovery, started = _one(
            conn, "SELECT pg_is_in_recovery(), pg_postmaster_start_time()::text")
        with pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):
            _one(conn, "INSERT INTO ticks (client_ts, note) VALUES (now(), 'read-port') "
                       "RETURNING id")
    finally:
        conn.close()
    served_by = starts.get(started)
    print(f"\nread port served by {served_by}, in_recovery={in_recovery}")
    assert in_recovery is True, "read port reached a server not in recovery"
    assert served_by is not None and served_by != primary.name, \
        f"read port served by {served_by}; primary is {primary.name}"


def test_02c_postgres_db_is_session_pooled(cluster, tdb):
    """LISTEN/NOTIFY on ``postgres`` through the write port works (session pool),
    while the tenant-style database is transaction-pooled."""
    primary = cluster.wait_primary(30)
    listener = _connect(cluster, tdb, cluster.topo.write_port, dbname="postgres")
    notifier = _connect(cluster, tdb, cluster.topo.write_port, dbname="postgres")
    channel = f"d360_hatest_{uuid.uuid4().hex[:8]}"
    try:
        with listener.cursor() as cur:
            cur.execute(f"LISTEN {channel}")
        # Churn: other transactions that would grab the listener's server connection
        # if the pool were transaction mode.
        for _ in range(5):
            _one(notifier, "SELECT 1")
        with notifier.cursor() as cur:
            cur.execute(f"NOTIFY {channel}, 'hello'")

        def got():
            listener.poll()
            return [n for n in listener.notifies if n.channel == channel]

        notes = halib.wait_until(got, 10, f"NOTIFY on {channel} reaches the LISTENing session")
        assert notes[0].payload == "hello"
    finally:
        listener.close()
        notifier.close()

    keep = _connect(cluster, tdb, cluster.topo.write_port)  # make sure its pool exists
    try:
        _one(keep, "SELECT 1")
        pools = cluster.pgbouncer_admin(primary, "SHOW POOLS")
    finally:
        keep.close()
    modes = {(p.get("database"), p.get("user")): p.get("pool_mode") for p in pools}
    print(f"\nPgBouncer pool modes on {primary.name}: "
          f"postgres={modes.get(('postgres', tdb.user))} "
          f"{tdb.dbname}={modes.get((tdb.dbname, tdb.user))}")
    if ("postgres", tdb.user) in modes and modes[("postgres", tdb.user)] is not None:
        assert modes[("postgres", tdb.user)] == "session"
    if (tdb.dbname, tdb.user) in modes and modes[(tdb.dbname, tdb.user)] is not None:
        assert modes[(tdb.dbname, tdb.user)] == "transaction"


# ---------------------------------------------------------------------------- 3. pooling


def test_03_pooling_1000_clients(cluster, tdb):
    clients = 1000
    workers = 200
    soft, hard = halib.raise_nofile_limit()
    print(f"\nRLIMIT_NOFILE soft={soft} hard={hard}")
    assert soft >= clients + 200, f"fd limit {soft} too low for {clients} client connections"

    topo = cluster.topo
    limit = int(topo.pgbouncer_default_pool_size) + int(topo.pgbouncer_reserve_pool_size)
    primary = cluster.wait_primary(30)
    dsn = cluster.dsn(topo.write_port, tdb.dbname, tdb.user, tdb.password, connect_timeout=15)

    samples_server: list[int] = []
    samples_clients: list[int] = []
    halt = threading.Event()

    def sampler():
        sql = ("SELECT count(*) FROM pg_stat_activity WHERE datname = "
               f"'{tdb.dbname}' AND usename = '{tdb.user}' AND backend_type = 'client backend'")
        while not halt.is_set():
            try:
                samples_server.append(int(cluster.psql_value(primary, sql)))
            except Exception:  # noqa: BLE001
                pass
            try:
                for p in cluster.pgbouncer_admin(primary, "SHOW POOLS"):
                    if p.get("database") == tdb.dbname and p.get("user") == tdb.user:
                        samples_clients.append(int(p["cl_active"]) + int(p["cl_waiting"]))
            except Exception:  # noqa: BLE001
                pass
            halt.wait(0.1)

    def open_one(_):
        # Opening 1,000 SCRAM sessions through one PgBouncer is a connection storm on a
        # 2-core host; a timed-out *open* is retried (and counted): the property under
        # test is what happens once they are all connected.
        for attempt in range(3):
            try:
                conn = psycopg2.connect(dsn)
                conn.autocommit = True
                return conn
            except psycopg2.OperationalError:
                if attempt == 2:
                    raise
                with retry_lock:
                    retries.append(1)
                time.sleep(0.5)

    conns: list = []
    open_errors: list[str] = []
    retries: list[int] = []
    retry_lock = threading.Lock()
    t_open = time.monotonic()
    with cf.ThreadPoolExecutor(20) as ex:
        for fut in cf.as_completed([ex.submit(open_one, i) for i in range(clients)]):
            try:
                conns.append(fut.result())
            except Exception as exc:  # noqa: BLE001
                open_errors.append(str(exc).strip())
    t_opened = time.monotonic() - t_open
    sampler_thread = threading.Thread(target=sampler, daemon=True)
    try:
        still_open = sum(1 for c in conns if c.closed == 0)
        opened = len(conns)
        print(f"opened {opened}/{clients} client connections in {t_opened:.1f}s "
              f"({len(retries)} retried opens, {len(open_errors)} errors"
              f"{': ' + open_errors[0] if open_errors else ''}); {still_open} open at once")
        assert opened == clients, (f"only {opened} of {clients} connections opened; first "
                                   f"error: {open_errors[0] if open_errors else None}")
        assert still_open == clients, f"only {still_open} of {clients} connections still open"

        def run(conn):
            with conn.cursor() as cur:
                cur.execute("SELECT pg_sleep(0.2)")

        sampler_thread.start()
        t0 = time.monotonic()
        errors: list[str] = []
        with cf.ThreadPoolExecutor(workers) as ex:
            futs = [ex.submit(run, c) for c in conns]
            done, pending = cf.wait(futs, timeout=300)
            for f in done:
                if f.exception() is not None:
                    errors.append(str(f.exception()).strip())
        elapsed = time.monotonic() - t0
        halt.set()
        sampler_thread.join(10)
    finally:
        halt.set()
        for c in conns:
            try:
                c.close()
            except Exception:  # noqa: BLE001
                pass

    max_server = max(samples_server, default=0)
    max_cl = max(samples_clients, default=None)
    print(f"{clients} queries of pg_sleep(0.2) with {workers} workers in {elapsed:.1f}s; "
          f"{len(errors)} errors")
    print(f"max clients seen by PgBouncer (cl_active+cl_waiting): {max_cl}; "
          f"max server connections (pg_stat_activity): {max_server} "
          f"over {len(samples_server)} samples; pool limit {limit}")
    assert not pending, f"{len(pending)} queries still running after 300s"
    assert not errors, f"{len(errors)} queries failed, e.g. {errors[0]}"
    assert samples_server, "no pg_stat_activity sample was taken on the primary"
    assert max_server > 0, "never saw a server connection for the test database"
    assert max_server <= limit, \
        f"{max_server} server connections > default_pool_size + reserve_pool_size = {limit}"


# ---------------------------------------------------------------------------- 3b. etcd leader guard


def _etcd_leader(cluster):
    """(member id, node) of etcd's current raft leader."""
    status = json.loads(cluster.etcdctl(["endpoint", "status", "-w", "json"]).stdout)
    for item in status:
        st = item["Status"]
        if st["leader"] == st["header"]["member_id"]:
            host = item["Endpoint"].split("//", 1)[-1].rsplit(":", 1)[0]
            return st["leader"], next((n for n in cluster.nodes if n.address == host), None)
    raise AssertionError(f"no etcd endpoint reports itself as leader: {status}")


def test_03b_etcd_leader_kept_off_primary(cluster):
    """Where etcd shares hosts with PostgreSQL, the guard moves etcd's leader off the primary."""
    cluster.wait_healthy(120)
    primary = cluster.wait_primary(30)
    members = {m["name"]: m["ID"] for m in cluster.etcd_members()}
    if primary.name not in members:
        pytest.skip(f"{primary.name} is not an etcd member: nothing to keep apart")
    # Put etcd's leadership on the primary's host on purpose, as an etcd election could.
    _, holder = _etcd_leader(cluster)
    if holder != primary:
        cluster.etcdctl(["move-leader", format(members[primary.name], "x")])
    halib.wait_until(lambda: _etcd_leader(cluster)[1] == primary, 15,
                     f"etcd leadership moved onto {primary.name} for the test")
    t0 = time.monotonic()
    halib.wait_until(lambda: _etcd_leader(cluster)[1] not in (primary, None), 75,
                     f"the guard moves etcd's leader off the primary {primary.name}", interval=1.0)
    _, now = _etcd_leader(cluster)
    print(f"\nETCD LEADER GUARD: leadership put on the primary {primary.name}; moved to "
          f"{now.name} after {time.monotonic() - t0:.1f}s")
    assert cluster.wait_primary(30) == primary, "moving etcd's leader must not move the primary"


# ---------------------------------------------------------------------------- 4. failover


def test_04_failover_kill_primary(cluster, tdb, state):
    cluster.wait_healthy(120)
    victim = cluster.wait_primary(30)
    state["failover_victim"] = victim.name
    res = halib.run_failover(cluster, tdb, tag=f"failover-{uuid.uuid4().hex[:8]}")
    o = res.outage
    print(f"\nFAILOVER: {res.old_leader} (TL {res.old_tl}) killed -> new leader "
          f"{res.new_leader} (TL {res.new_tl}); write outage {o.seconds:.2f}s; "
          f"{res.acked} commits acknowledged, {res.failures} failed attempts, "
          f"{len(res.lost_ids)} acknowledged commits missing")
    assert res.new_leader and res.new_leader != res.old_leader
    assert res.new_tl is not None and res.old_tl is not None and res.new_tl > res.old_tl, \
        f"timeline did not increase: {res.old_tl} -> {res.new_tl}"
    if cluster.topo.synchronous_mode:
        assert not res.lost_ids, \
            f"acknowledged commits lost in failover (synchronous_mode): {res.lost_ids[:20]}"
    assert o.seconds <= MAX_FAILOVER_OUTAGE_S, \
        f"failover write outage {o.seconds:.1f}s > {MAX_FAILOVER_OUTAGE_S}s"


# ---------------------------------------------------------------------------- 5. rejoin


def test_05_old_primary_rejoins(cluster, tdb, state):
    name = state.get("failover_victim")
    stopped = [n for n in cluster.nodes if not cluster.is_running(n)]
    if name is None and not stopped:
        pytest.skip("the failover test did not stop any node")
    node = cluster.topo.node(name) if name else stopped[0]
    if cluster.is_running(node) and cluster.find_primary() == node:
        pytest.skip(f"{node.name} was never killed: the failover test stopped before its kill")
    took = halib.start_and_wait_rejoin(cluster, node, REJOIN_TIMEOUT_S)
    _print_members(cluster, f"after {node.name} rejoined:")
    print(f"REJOIN: {node.name} streaming on the current timeline {took:.1f}s after docker start")
    for other in stopped:
        if other.name != node.name:
            halib.start_and_wait_rejoin(cluster, other, REJOIN_TIMEOUT_S)

    def etcd_whole():
        health = cluster.etcd_health()
        return len(health) == len(cluster.nodes) and all(h["health"] for h in health)

    halib.wait_until(etcd_whole, 60, "etcd: all members healthy again")
    cluster.wait_healthy(60)


# ---------------------------------------------------------------------------- 6. switchover


def test_06_planned_switchover(cluster, tdb):
    cluster.wait_healthy(120)
    res = halib.run_switchover(cluster, tdb, tag=f"switchover-{uuid.uuid4().hex[:8]}")
    o = res.outage
    print(f"\nSWITCHOVER: {res.old_leader} -> {res.new_leader} (asked for {res.candidate}); "
          f"TL {res.old_tl} -> {res.new_tl}; write outage {o.seconds:.2f}s; "
          f"patronictl took {res.event_seconds:.1f}s; {res.acked} acknowledged, "
          f"{res.failures} failed attempts, {len(res.lost_ids)} acknowledged missing")
    assert res.new_leader == res.candidate, \
        f"leader is {res.new_leader}, switchover asked for {res.candidate}"
    assert not res.lost_ids, f"acknowledged commits lost in switchover: {res.lost_ids[:20]}"
    assert o.seconds <= MAX_SWITCHOVER_OUTAGE_S, \
        f"switchover write outage {o.seconds:.1f}s > {MAX_SWITCHOVER_OUTAGE_S}s"
    # The demoted leader must come back as a streaming replica on its own.
    halib.wait_until(lambda: not halib.rejoin_problems(cluster, res.old_leader), 90,
                     f"{res.old_leader} streams from {res.new_leader} after the switchover",
                     interval=1.0)


# ---------------------------------------------------------------------------- 7. PgBouncer down


def _balancer_views(cluster):
    """{node name: stats rows} for every HAProxy whose stats page answers."""
    views = {}
    for n in cluster.nodes:
        rows = cluster.haproxy_stats(n)
        if rows is not None:
            views[n.name] = rows
    return views


def test_07_pgbouncer_down_on_primary_takes_it_out(cluster, tdb):
    cluster.wait_healthy(120)
    primary = cluster.wait_primary(30)
    views = _balancer_views(cluster)
    assert views, "no HAProxy stats page answers on any node"
    pxname = cluster.write_proxy_name(next(iter(views.values())))
    print(f"\nwrite backend: {pxname}; balancers answering: {sorted(views)}")

    def statuses():
        v = _balancer_views(cluster)
        return {b: cluster.server_status(rows, pxname, primary) for b, rows in v.items()}

    def all_status(prefix):
        s = statuses()
        return s if s and all((st or "").startswith(prefix) for st in s.values()) else None

    halib.wait_until(lambda: all_status("UP"), 30,
                     f"{primary.name} UP in {pxname} on every balancer before the test")

    t0 = time.monotonic()
    cluster.systemctl(primary, "stop", "pgbouncer")
    try:
        seen = halib.wait_until(lambda: all_status("DOWN"), HAPROXY_DETECT_S,
                                f"{primary.name} marked DOWN in {pxname} on every balancer "
                                "after PgBouncer stopped", interval=0.2)
        detect = time.monotonic() - t0
        print(f"PGBOUNCER DOWN: detected on {sorted(seen)} after {detect:.1f}s")

        t1 = time.monotonic()
        reached = None
        try:
            conn = _connect(cluster, tdb, cluster.topo.write_port)
            try:
                reached = _one(conn, "SELECT pg_is_in_recovery(), "
                                     "pg_postmaster_start_time()::text")
            finally:
                conn.close()
        except psycopg2.Error as exc:
            print(f"new write connection refused after {time.monotonic() - t1:.2f}s: "
                  f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}")
        refuse = time.monotonic() - t1
        assert reached is None, \
            f"write port still reached a server with the primary's PgBouncer stopped: {reached}"
        assert refuse < 2.5, f"write connection took {refuse:.1f}s to fail (expected fast)"
    finally:
        cluster.systemctl(primary, "start", "pgbouncer", check=False)

    t2 = time.monotonic()
    halib.wait_until(lambda: all_status("UP"), 30,
                     f"{primary.name} UP again in {pxname} after PgBouncer started")
    back = time.monotonic() - t2
    halib.wait_until(lambda: _write_once(cluster, tdb, "after-pgbouncer"), 15,
                     "writes through the VIP work after PgBouncer started")
    print(f"PGBOUNCER UP: back in rotation after {back:.1f}s; writes work")


# ---------------------------------------------------------------------------- 8. VIP move


def test_08_vip_moves_when_haproxy_stops(cluster, tdb):
    holders = cluster.vip_holders()
    assert len(holders) == 1, f"VIP {cluster.topo.vip} held by {[h.name for h in holders]}"
    old = holders[0]
    writer = halib.Writer(cluster.dsn(cluster.topo.write_port, tdb.dbname, tdb.user,
                                      tdb.password, connect_timeout=2),
                          tag=f"vip-{uuid.uuid4().hex[:8]}")
    try:
        writer.start()
        try:
            halib.wait_until(lambda: len(writer.snapshot()) >= 3, 20,
                             "writes through the VIP before the move "
                             f"(failures {writer.failures[-3:]})", interval=0.1)
            time.sleep(2)
            t0 = time.monotonic()
            cluster.systemctl(old, "stop", "haproxy")
            t_done = time.monotonic()

            def moved():
                h = cluster.vip_holders()
                return h[0] if len(h) == 1 and h[0].name != old.name else None

            new = halib.wait_until(moved, 30, f"VIP leaves {old.name} for another node",
                                   interval=0.2)
            vip_move = time.monotonic() - t0
            writer.wait_recovered(t_done, 30)
            time.sleep(2)
        finally:
            writer.stop()
        o = writer.outage(t0)
        print(f"\nVIP MOVE: {old.name} -> {new.name} in {vip_move:.1f}s; write outage "
              f"{o.seconds:.2f}s; {writer.connects} connects, "
              f"{len(writer.failures)} failed attempts")

        cluster.systemctl(old, "start", "haproxy")
        halib.wait_until(lambda: cluster.haproxy_stats(old) is not None, 30,
                         f"HAProxy on {old.name} answers again")
        time.sleep(8)  # several VRRP advertisement intervals: a preempting node would be back
        after = cluster.vip_holders()
        print(f"after HAProxy restarted on {old.name}: VIP on {[h.name for h in after]}")
        assert [h.name for h in after] == [new.name], \
            f"VIP should stay on {new.name} (nopreempt), now on {[h.name for h in after]}"
        assert _write_once(cluster, tdb, "after-vip-move")
    finally:
        cluster.systemctl(old, "start", "haproxy", check=False)
