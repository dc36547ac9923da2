"""Helpers for the live HA PostgreSQL tier: tests/ha and bench/ha_failover.py.

Everything here talks to a *deployed* tier described by the topology JSON file
named by ``D360_TOPOLOGY`` (written by the lab/CI playbook).  Node-level commands
go through ``docker exec``; client traffic goes to the VIP exactly as an
application's would (HAProxy -> PgBouncer -> PostgreSQL).

The superuser password never crosses the network: test roles/databases are
created with ``docker exec -u postgres psql`` over the node's local socket.
"""

from __future__ import annotations

import base64
import csv
import datetime as _dt
import io
import json
import os
import resource
import secrets
import select
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable, Iterable

import psycopg2
import psycopg2.extensions

DOCKER = os.environ.get("D360_DOCKER", "docker")

REQUIRED_KEYS = (
    "vip", "write_port", "read_port", "stats_port", "pgbouncer_port", "postgres_port",
    "patroni_port", "stats_user", "stats_password", "pgbouncer_admin_user",
    "pgbouncer_admin_password", "pgbouncer_default_pool_size",
    "pgbouncer_reserve_pool_size", "synchronous_mode", "patroni_config", "etcdctl_env",
    "nodes",
)

WRITE_PROXY_HINTS = ("write", "primary", "master", "rw")
REPLICA_ROLES = ("replica", "sync standby")


# --------------------------------------------------------------------------- waiting


def wait_until(predicate: Callable[[], Any], timeout: float, message: str,
               interval: float = 0.5) -> Any:
    """Poll ``predicate`` until it returns something truthy; return that value.

    Exceptions raised by the predicate count as "not yet" and are reported if
    the deadline passes.  Always bounded: raises AssertionError after ``timeout``.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last = value
        except Exception as exc:  # noqa: BLE001 - reported on timeout
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s: {message} (last: {last!r})")
        time.sleep(interval)


def raise_nofile_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        target = 1 << 20
    else:
        target = hard
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)


# --------------------------------------------------------------------------- topology


@dataclass(frozen=True)
class Node:
    name: str
    address: str
    container: str


@dataclass
class Topology:
    raw: dict
    nodes: list[Node]

    def __getattr__(self, key: str) -> Any:
        try:
            return self.raw[key]
        except KeyError:
            raise AttributeError(key) from None

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no node named {name!r} in topology ({[n.name for n in self.nodes]})")


def load_topology(path: str) -> Topology:
    with open(path, encoding="utf-8") as fh:
        raw = json.load(fh)
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        raise ValueError(f"topology {path} lacks keys: {', '.join(missing)}")
    nodes = [Node(name=n["name"], address=n["address"], container=n["container"])
             for n in raw["nodes"]]
    if len(nodes) < 3:
        raise ValueError(f"topology {path} lists {len(nodes)} nodes; the HA tier needs 3")
    return Topology(raw=raw, nodes=nodes)


# --------------------------------------------------------------------------- members


@dataclass
class Member:
    name: str
    host: str
    role: str          # lower case: leader, sync standby, replica, standby leader
    state: str         # running, streaming, stopped, starting, ...
    tl: int | None
    lag_mb: Any        # int (MB) for replicas, "" for the leader, "unknown" when unknown

    @property
    def is_leader(self) -> bool:
        return self.role == "leader"

    @property
    def is_replica(self) -> bool:
        return self.role in REPLICA_ROLES


def _to_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@dataclass
class Outage:
    seconds: float
    last_ok_before: float    # monotonic time of the ack that opened the gap
    first_ok_after: float    # monotonic time of the ack that closed it


@dataclass
class CycleResult:
    kind: str                # "failover" or "switchover"
    old_leader: str
    new_leader: str | None
    old_tl: int | None
    new_tl: int | None
    outage: Outage | None
    acked: int
    failures: int
    lost_ids: list = field(default_factory=list)
    event_seconds: float = 0.0   # how long the kill / switchover command took
    candidate: str | None = None


# --------------------------------------------------------------------------- cluster


class Cluster:
    """Operations on the deployed tier (docker exec, REST, VIP, HAProxy stats)."""

    def __init__(self, topo: Topology):
        self.topo = topo
        self.nodes = topo.nodes

    # ----- docker
    def docker(self, args: list[str], timeout: float = 60, check: bool = True
               ) -> subprocess.CompletedProcess:
        proc = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args[:4])}... failed rc={proc.returncode}: "
                               f"{proc.stderr.strip()[-2000:]}")
        return proc

    def dexec(self, node: Node, argv: list[str], user: str | None = None,
              env: dict | None = None, timeout: float = 60, check: bool = True
              ) -> subprocess.CompletedProcess:
        args = ["exec"]
        if user:
            args += ["-u", user]
        for k, v in (env or {}).items():
            args += ["-e", f"{k}={v}"]
        args += [node.container, *argv]
        return self.docker(args, timeout=timeout, check=check)

    def is_running(self, node: Node) -> bool:
        proc = self.docker(["inspect", "-f", "{{.State.Running}}", node.container],
                           timeout=20, check=False)
        return proc.returncode == 0 and proc.stdout.strip() == "true"

    def running_nodes(self) -> list[Node]:
        return [n for n in self.nodes if self.is_running(n)]

    def kill(self, node: Node) -> None:
        self.docker(["kill", node.container], timeout=60)

    def start(self, node: Node) -> None:
        self.docker(["start", node.container], timeout=120)

    def systemctl(self, node: Node, action: str, unit: str, check: bool = True
                  ) -> subprocess.CompletedProcess:
        return self.dexec(node, ["systemctl", action, unit], timeout=90, check=check)

    # ----- psql (superuser, local socket, peer auth)
    def psql(self, node: Node, sql: str, db: str = "postgres", timeout: float = 60
             ) -> list[list[str]]:
        proc = self.dexec(
            node,
            ["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-p", str(self.topo.postgres_port),
             "-d", db, "-c", sql],
            user="postgres", timeout=timeout, check=False)
        if proc.returncode != 0:
            raise RuntimeError(
                f"psql on {node.name} ({db}) failed: {proc.stderr.strip()}\nSQL: {sql}")
        return [line.split("|") for line in proc.stdout.splitlines() if line != ""]

    def psql_value(self, node: Node, sql: str, db: str = "postgres") -> str:
        rows = self.psql(node, sql, db=db)
        if not rows:
            raise RuntimeError(f"psql on {node.name}: no row for {sql}")
        return rows[0][0]

    # ----- Patroni
    def patroni_http(self, node: Node, path: str, timeout: float = 1.5
                     ) -> tuple[int | None, Any]:
        url = f"http://{node.address}:{self.topo.patroni_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                body = resp.read()
                status = resp.status
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read()
        except (urllib.error.URLError, OSError, ValueError):
            return None, None
        try:
            return status, json.loads(body or b"null")
        except ValueError:
            return status, body

    def patronictl(self, args: list[str], node: Node | None = None, timeout: float = 60,
                   check: bool = True) -> subprocess.CompletedProcess:
        candidates = [node] if node else self.running_nodes()
        last: subprocess.CompletedProcess | None = None
        for n in candidates:
            proc = self.dexec(n, ["patronictl", "-c", self.topo.patroni_config, *args],
                              timeout=timeout, check=False)
            if proc.returncode == 0:
                return proc
            last = proc
        if check:
            detail = last.stderr.strip()[-1500:] if last else "no running node"
            raise RuntimeError(f"patronictl {' '.join(args)} failed: {detail}")
        return last  # type: ignore[return-value]

    def members(self) -> list[Member]:
        proc = self.patronictl(["list", "-f", "json"], timeout=30)
        out = proc.stdout.strip()
        start = out.find("[")
        data = json.loads(out[start:] if start >= 0 else out)
        result = []
        for m in data:
            result.append(Member(
                name=str(m.get("Member", "")),
                host=str(m.get("Host", "")),
                role=str(m.get("Role", "")).strip().lower(),
                state=str(m.get("State", "")).strip().lower(),
                tl=_to_int(m.get("TL")),
                lag_mb=m.get("Lag in MB", ""),
            ))
        return result

    def leader_member(self) -> Member | None:
        leaders = [m for m in self.members() if m.is_leader]
        return leaders[0] if len(leaders) == 1 else None

    def find_primary(self, exclude: Iterable[str] = ()) -> Node | None:
        """The node whose Patroni answers 200 on /primary (None if none or ambiguous)."""
        skip = set(exclude)
        found = []
        answered = 0
        for n in self.nodes:
            if n.name in skip:
                continue
            status, _ = self.patroni_http(n, "/primary")
            if status is not None:
                answered += 1
            if status == 200:
                found.append(n)
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise AssertionError(
                f"more than one node claims to be primary: {[n.name for n in found]}")
        if answered == 0:
            # REST API unreachable from here: fall back to patronictl.
            leader = self.leader_member()
            if leader and leader.name not in skip:
                return self.topo.node(leader.name)
        return None

    def wait_primary(self, timeout: float = 60, exclude: Iterable[str] = ()) -> Node:
        exclude = tuple(exclude)
        return wait_until(lambda: self.find_primary(exclude), timeout,
                          f"a Patroni primary (excluding {list(exclude)})")

    def streaming_count(self, primary: Node) -> int:
        return int(self.psql_value(
            primary, "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"))

    def health_problems(self, max_lag_mb: int = 16) -> list[str]:
        """Empty list when: one leader, all other members replicas streaming on its TL,
        and the leader's pg_stat_replication shows them all streaming."""
        problems: list[str] = []
        members = self.members()
        leaders = [m for m in members if m.is_leader]
        replicas = [m for m in members if m.is_replica]
        expected = len(self.nodes) - 1
        if len(leaders) != 1:
            problems.append(f"{len(leaders)} leaders")
            return problems + [f"members: {members}"]
        leader = leaders[0]
        if len(replicas) != expected:
            problems.append(f"{len(replicas)} replicas, expected {expected}: {members}")
        for r in replicas:
            if r.state not in ("running", "streaming"):
                problems.append(f"{r.name} state {r.state}")
            if r.tl != leader.tl:
                problems.append(f"{r.name} on TL {r.tl}, leader on TL {leader.tl}")
            lag = _to_int(r.lag_mb)
            if lag is None or lag > max_lag_mb:
                problems.append(f"{r.name} lag {r.lag_mb!r} MB")
        try:
            streaming = self.streaming_count(self.topo.node(leader.name))
            if streaming != expected:
                problems.append(f"pg_stat_replication on {leader.name}: {streaming} streaming")
        except Exception as exc:  # noqa: BLE001
            problems.append(f"pg_stat_replication on {leader.name}: {exc}")
        return problems

    def wait_healthy(self, timeout: float = 120) -> list[Member]:
        def ok():
            problems = self.health_problems()
            if problems:
                raise AssertionError("; ".join(problems))
            return True
        wait_until(ok, timeout,
                   "cluster healthy (1 leader, all replicas streaming on its timeline)",
                   interval=1.0)
        return self.members()

    def switchover(self, leader: str, candidate: str) -> subprocess.CompletedProcess:
        node = self.topo.node(leader)
        last = None
        for flag in ("--leader", "--master"):
            proc = self.dexec(
                node, ["patronictl", "-c", self.topo.patroni_config, "switchover",
                       flag, leader, "--candidate", candidate, "--force"],
                timeout=120, check=False)
            out = proc.stdout + proc.stderr
            if proc.returncode == 0 and "switchover failed" not in out.lower():
                return proc
            last = proc
            if "no such option" not in out.lower():
                break
        raise RuntimeError(f"switchover {leader} -> {candidate} failed: "
                           f"{(last.stdout + last.stderr).strip()[-2000:]}")

    def show_config(self) -> dict:
        import yaml  # pyyaml: only needed here
        proc = self.patronictl(["show-config"], timeout=30)
        return yaml.safe_load(proc.stdout) or {}

    # ----- etcd
    def etcdctl(self, args: list[str], node: Node | None = None, timeout: float = 30
                ) -> subprocess.CompletedProcess:
        candidates = [node] if node else self.running_nodes()
        last = None
        for n in candidates:
            proc = self.dexec(n, ["etcdctl", *args], env=self.topo.etcdctl_env,
                              timeout=timeout, check=False)
            if proc.returncode == 0:
                return proc
            last = (n, proc)
        if last is None:
            raise RuntimeError("etcdctl: no running node")
        n, proc = last
        raise RuntimeError(f"etcdctl {' '.join(args)} on {n.name} rc={proc.returncode}: "
                           f"{(proc.stdout + proc.stderr).strip()[-1500:]}")

    def etcd_members(self) -> list[dict]:
        data = json.loads(self.etcdctl(["member", "list", "-w", "json"]).stdout)
        return data.get("members", [])

    def etcd_health(self) -> list[dict]:
        """[{endpoint, health(bool), error}] for every cluster endpoint."""
        # etcdctl exits non-zero when an endpoint is unhealthy but still prints the
        # JSON report: parse whatever the first running node prints.
        out = ""
        for n in self.running_nodes():
            proc = self.dexec(n, ["etcdctl", "endpoint", "health", "--cluster", "-w", "json"],
                              env=self.topo.etcdctl_env, timeout=30, check=False)
            out = proc.stdout.strip()
            if out.startswith(("[", "{")):
                break
        else:
            raise RuntimeError(f"etcdctl endpoint health: no JSON report ({out[-500:]!r})")
        try:
            data = json.loads(out)
        except ValueError:
            data = [json.loads(line) for line in out.splitlines() if line.strip().startswith("{")]
        if isinstance(data, dict):
            data = [data]
        result = []
        for item in data:
            health = item.get("health")
            if isinstance(health, str):
                health = health.lower() == "true"
            result.append({"endpoint": item.get("endpoint"), "health": bool(health),
                           "error": item.get("error", "")})
        return result

    # ----- VIP / keepalived
    def vip_holders(self) -> list[Node]:
        holders = []
        needle = f" {self.topo.vip}/"
        for n in self.nodes:
            if not self.is_running(n):
                continue
            proc = self.dexec(n, ["ip", "-4", "-o", "addr", "show"], timeout=20, check=False)
            if proc.returncode == 0 and needle in proc.stdout:
                holders.append(n)
        return holders

    # ----- HAProxy stats
    def haproxy_stats(self, node: Node, timeout: float = 2.0) -> list[dict] | None:
        """Rows of the stats CSV of the HAProxy on ``node``; None when it doesn't answer."""
        token = base64.b64encode(
            f"{self.topo.stats_user}:{self.topo.stats_password}".encode()).decode()
        for path in ("/;csv", "/stats;csv", "/haproxy?stats;csv"):
            url = f"http://{node.address}:{self.topo.stats_port}{path}"
            req = urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
            try:
                with urllib.request.urlopen(req, timeout=timeout) as resp:
                    text = resp.read().decode("utf-8", "replace")
            except urllib.error.HTTPError:
                continue
            except (urllib.error.URLError, OSError):
                return None
            if text.startswith("# pxname"):
                return list(csv.DictReader(io.StringIO(text[2:])))
        return None

    def write_proxy_name(self, rows: list[dict]) -> str:
        names = sorted({r["pxname"] for r in rows
                        if r.get("svname") not in ("FRONTEND", "BACKEND")})
        hits = [p for p in names if any(h in p.lower() for h in WRITE_PROXY_HINTS)]
        node_names = {n.name for n in self.nodes}
        hits = [p for p in hits
                if any(r["pxname"] == p and r.get("svname") in node_names for r in rows)]
        if len(hits) != 1:
            raise AssertionError(f"cannot tell the write backend among HAProxy proxies {names} "
                                 f"(candidates {hits})")
        return hits[0]

    def server_status(self, rows: list[dict], pxname: str, node: Node) -> str | None:
        for r in rows:
            if r["pxname"] == pxname and r.get("svname") == node.name:
                return r.get("status", "")
        return None

    # ----- PgBouncer admin console
    def pgbouncer_admin(self, node: Node, command: str) -> list[dict]:
        """Run an admin command on ``node``'s PgBouncer; rows as dicts.

        Over the network with the admin credentials from the topology; falls back to
        psql inside the container against 127.0.0.1 if the network path refuses.
        """
        try:
            conn = psycopg2.connect(host=node.address, port=self.topo.pgbouncer_port,
                                    dbname="pgbouncer", user=self.topo.pgbouncer_admin_user,
                                    password=self.topo.pgbouncer_admin_password,
                                    connect_timeout=3, sslmode="prefer")
        except psycopg2.Error as net_exc:
            proc = self.dexec(
                node, ["psql", "-X", "--csv", "-h", "127.0.0.1",
                       "-p", str(self.topo.pgbouncer_port), "-U", self.topo.pgbouncer_admin_user,
                       "-d", "pgbouncer", "-c", command],
                env={"PGPASSWORD": self.topo.pgbouncer_admin_password}, timeout=30, check=False)
            if proc.returncode != 0:
                raise RuntimeError(f"pgbouncer admin on {node.name}: network: {net_exc}; "
                                   f"local: {proc.stderr.strip()}") from None
            return list(csv.DictReader(io.StringIO(proc.stdout)))
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(command)
                cols = [d[0] for d in cur.description]
                return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
        finally:
            conn.close()

    # ----- node identity (which PostgreSQL served a query behind PgBouncer)
    def postmaster_starts(self) -> dict[str, str]:
        ids = {}
        for n in self.running_nodes():
            try:
                ids[self.psql_value(n, "SELECT pg_postmaster_start_time()::text")] = n.name
            except RuntimeError:
                pass
        return ids

    # ----- client DSNs
    def dsn(self, port: int, dbname: str, user: str, password: str, connect_timeout: int = 3,
            host: str | None = None, **extra: Any) -> str:
        parts = {
            "host": host or self.topo.vip, "port": port, "dbname": dbname, "user": user,
            "password": password, "sslmode": "disable", "connect_timeout": connect_timeout,
            "application_name": "d360-hatest", "keepalives": 1, "keepalives_idle": 2,
            "keepalives_interval": 1, "keepalives_count": 3, "tcp_user_timeout": 5000,
        }
        parts.update(extra)
        return " ".join(f"{k}={_dsn_quote(v)}" for k, v in parts.items())


def _dsn_quote(value: Any) -> str:
    s = str(value)
    if s == "" or any(c in s for c in " '\\"):
        s = "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return s


# --------------------------------------------------------------------------- test database


@dataclass
class ScratchDB:
    """A throw-away login role + database owned by it (never a tenant)."""

    dbname: str
    user: str
    password: str


def create_test_db(cluster: Cluster, dbname: str = "d360_hatest",
                   user: str | None = None) -> ScratchDB:
    """(Re)create a login role (scram, random password), a database it owns, and ``ticks``."""
    user = user or f"{dbname}_app"
    password = secrets.token_urlsafe(24)
    primary = cluster.wait_primary(60)
    drop_test_db(cluster, ScratchDB(dbname, user, ""), primary=primary)
    cluster.psql(primary, "SET password_encryption = 'scram-sha-256'; "
                          f"CREATE ROLE {user} LOGIN PASSWORD '{password}'")
    cluster.psql(primary, f"CREATE DATABASE {dbname} OWNER {user}")
    cluster.psql(primary, f"GRANT CONNECT ON DATABASE postgres TO {user}")
    cluster.psql(primary,
                 "CREATE TABLE ticks (id bigserial PRIMARY KEY, client_ts timestamptz, note text); "
                 "CREATE INDEX ticks_note ON ticks (note); "
                 f"ALTER TABLE ticks OWNER TO {user}", db=dbname)
    return ScratchDB(dbname, user, password)


def drop_test_db(cluster: Cluster, tdb: ScratchDB, primary: Node | None = None) -> None:
    primary = primary or cluster.wait_primary(60)
    exists = cluster.psql(primary, f"SELECT 1 FROM pg_roles WHERE rolname = '{tdb.user}'")
    cluster.psql(primary, f"DROP DATABASE IF EXISTS {tdb.dbname} WITH (FORCE)")
    if exists:
        cluster.psql(primary, f"REVOKE ALL ON DATABASE postgres FROM {tdb.user}")
        cluster.psql(primary, f"DROP OWNED BY {tdb.user}")
        cluster.psql(primary, f"DROP ROLE IF EXISTS {tdb.user}")


# --------------------------------------------------------------------------- async psycopg2


def _poll_wait(conn, deadline: float) -> None:
    """Drive an async psycopg2 connection to POLL_OK, or raise TimeoutError at deadline."""
    poller = select.poll()
    registered = None
    while True:
        state = conn.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("client-side deadline exceeded")
        mask = select.POLLIN if state == psycopg2.extensions.POLL_READ else select.POLLOUT
        fd = conn.fileno()
        if registered != (fd, mask):
            if registered is not None:
                try:
                    poller.unregister(registered[0])
                except KeyError:
                    pass
            poller.register(fd, mask | select.POLLERR | select.POLLHUP)
            registered = (fd, mask)
        poller.poll(max(1, int(min(remaining, 0.5) * 1000)))


def connect_with_deadline(dsn: str, timeout: float):
    conn = psycopg2.connect(dsn, async_=1)
    try:
        _poll_wait(conn, time.monotonic() + timeout)
    except BaseException:
        conn.close()
        raise
    return conn


def query_with_deadline(conn, sql: str, params: Any = None, timeout: float = 5.0):
    cur = conn.cursor()
    cur.execute(sql, params)
    _poll_wait(conn, time.monotonic() + timeout)
    return cur.fetchall() if cur.description else None


# --------------------------------------------------------------------------- writer


class Writer(threading.Thread):
    """Commit one row every ``interval`` s through the given DSN; measure outages.

    Each INSERT ... RETURNING id that returns is an acknowledged commit
    (autocommit).  On any error or client-side timeout the connection is closed and
    re-opened in a loop.  ``acks`` holds (id, t_start, t_ack) in monotonic time,
    ``failures`` holds (t, message).
    """

    def __init__(self, dsn: str, tag: str, interval: float = 0.05, op_timeout: float = 5.0,
                 connect_timeout: float = 2.0):
        super().__init__(name=f"writer-{tag}", daemon=True)
        self.dsn = dsn
        self.tag = tag
        self.interval = interval
        self.op_timeout = op_timeout
        self.connect_timeout = connect_timeout
        self.acks: list[tuple[int, float, float]] = []
        self.failures: list[tuple[float, str]] = []
        self.connects = 0
        self._halt = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        conn = None
        while not self._halt.is_set():
            t0 = time.monotonic()
            try:
                if conn is None:
                    conn = connect_with_deadline(self.dsn, self.connect_timeout)
                    self.connects += 1
                rows = query_with_deadline(
                    conn, "INSERT INTO ticks (client_ts, note) VALUES (%s, %s) RETURNING id",
                    (_dt.datetime.now(_dt.UTC), self.tag), timeout=self.op_timeout)
                with self._lock:
                    self.acks.append((int(rows[0][0]), t0, time.monotonic()))
            except Exception as exc:  # noqa: BLE001 - every failure is data
                with self._lock:
                    self.failures.append((time.monotonic(), f"{type(exc).__name__}: {exc}".strip()))
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:  # noqa: BLE001
                        pass
                    conn = None
                self._halt.wait(0.1)
                continue
            self._halt.wait(max(0.0, self.interval - (time.monotonic() - t0)))
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass

    def stop(self, timeout: float = 15) -> None:
        self._halt.set()
        self.join(timeout)

    # ----- analysis
    def snapshot(self) -> list[tuple[int, float, float]]:
        with self._lock:
            return list(self.acks)

    def acked_ids(self) -> set[int]:
        return {a[0] for a in self.snapshot()}

    def acks_started_after(self, t: float) -> int:
        return sum(1 for _, ts, _ in self.snapshot() if ts > t)

    def wait_recovered(self, after: float, timeout: float, count: int = 3) -> float:
        """Wait until ``count`` commits *started* after ``after`` were acknowledged.

        Returns the ack time of the first of them.
        """
        wait_until(lambda: self.acks_started_after(after) >= count, timeout,
                   f"writes through the VIP succeed again ({len(self.failures)} failures so far; "
                   f"last: {self.failures[-1][1] if self.failures else None})",
                   interval=0.1)
        return min(ta for _, ts, ta in self.snapshot() if ts > after)

    def outage(self, t_event: float) -> Outage:
        """Longest gap between consecutive acks from the last ack before ``t_event`` on.

        That is "first successful commit after the event minus last successful commit
        before it", robust against a commit that was in flight at the event and got
        acknowledged just after it.
        """
        times = sorted(ta for _, _, ta in self.snapshot())
        before = [t for t in times if t <= t_event]
        if not before:
            raise AssertionError("writer had no acknowledged commit before the event")
        seq = [before[-1]] + [t for t in times if t > before[-1]]
        if len(seq) < 2:
            raise AssertionError("writer had no acknowledged commit after the event")
        gap, a, b = max((seq[i + 1] - seq[i], seq[i], seq[i + 1]) for i in range(len(seq) - 1))
        return Outage(seconds=gap, last_ok_before=a, first_ok_after=b)


def missing_acked(cluster: Cluster, primary: Node, tdb: ScratchDB, writer: Writer) -> list[int]:
    rows = cluster.psql(primary, f"SELECT id FROM ticks WHERE note = '{writer.tag}'", db=tdb.dbname)
    present = {int(r[0]) for r in rows}
    return sorted(writer.acked_ids() - present)


# --------------------------------------------------------------------------- cycles


def pick_sync_candidate(cluster: Cluster, leader: str) -> str:
    """Switchover target: the sync standby in synchronous mode, else a streaming replica."""
    members = cluster.members()
    replicas = [m for m in members if m.is_replica and m.name != leader
                and m.state in ("running", "streaming")]
    sync = [m for m in replicas if m.role == "sync standby"]
    if cluster.topo.synchronous_mode:
        if not sync:
            raise AssertionError(f"synchronous_mode is on but no Sync Standby: {members}")
        return sync[0].name
    if not replicas:
        raise AssertionError(f"no streaming replica to switch over to: {members}")
    return (sync or replicas)[0].name


def _run_cycle(cluster: Cluster, tdb: ScratchDB, kind: str, tag: str, pre: float, post: float,
               recover_timeout: float, log: Callable[[str], None]) -> CycleResult:
    old = cluster.wait_primary(60)
    leader = cluster.leader_member()
    old_tl = leader.tl if leader else None
    candidate = pick_sync_candidate(cluster, old.name) if kind == "switchover" else None
    writer = Writer(cluster.dsn(cluster.topo.write_port, tdb.dbname, tdb.user, tdb.password,
                                connect_timeout=2), tag=tag)
    writer.start()
    try:
        wait_until(lambda: len(writer.snapshot()) >= 3, 20,
                   f"writer commits through VIP:{cluster.topo.write_port} before the {kind} "
                   f"(failures: {writer.failures[-3:]})", interval=0.1)
        time.sleep(pre)
        t_event = time.monotonic()
        if kind == "failover":
            log(f"docker kill {old.container} (primary {old.name}, TL {old_tl})")
            cluster.kill(old)
        else:
            log(f"switchover {old.name} -> {candidate} (TL {old_tl})")
            cluster.switchover(old.name, candidate)
        t_done = time.monotonic()
        writer.wait_recovered(t_done, recover_timeout)
        time.sleep(post)
    finally:
        writer.stop()
    outage = writer.outage(t_event)
    new = cluster.wait_primary(60, exclude=(old.name,))

    def leader_is_new():
        m = cluster.leader_member()
        if m is None or m.name != new.name or m.tl is None:
            return None
        return m if old_tl is None or m.tl > old_tl else None

    try:
        new_leader = wait_until(leader_is_new, 30,
                                f"patronictl shows {new.name} as the leader on a new timeline")
    except AssertionError:
        # Report what is there; the caller's assertions say what is wrong with it.
        new_leader = cluster.leader_member() or Member(new.name, "", "leader", "", None, "")
    lost = missing_acked(cluster, new, tdb, writer)
    return CycleResult(kind=kind, old_leader=old.name, new_leader=new.name, old_tl=old_tl,
                       new_tl=new_leader.tl, outage=outage, acked=len(writer.snapshot()),
                       failures=len(writer.failures), lost_ids=lost,
                       event_seconds=t_done - t_event, candidate=candidate)


def run_failover(cluster: Cluster, tdb: ScratchDB, tag: str, pre: float = 3.0, post: float = 3.0,
                 recover_timeout: float = 90, log: Callable[[str], None] = print) -> CycleResult:
    """Hard-kill the primary's container under a writer; the killed node stays down."""
    return _run_cycle(cluster, tdb, "failover", tag, pre, post, recover_timeout, log)


def run_switchover(cluster: Cluster, tdb: ScratchDB, tag: str, pre: float = 3.0, post: float = 3.0,
                   recover_timeout: float = 60, log: Callable[[str], None] = print
                   ) -> CycleResult:
    return _run_cycle(cluster, tdb, "switchover", tag, pre, post, recover_timeout, log)


def rejoin_problems(cluster: Cluster, name: str, max_lag_mb: int = 16) -> list[str]:
    members = {m.name: m for m in cluster.members()}
    leader = next((m for m in members.values() if m.is_leader), None)
    me = members.get(name)
    problems = []
    if leader is None:
        problems.append("no leader")
    if me is None:
        return problems + [f"{name} not in patronictl list"]
    if not me.is_replica:
        problems.append(f"{name} role {me.role!r}")
    if me.state not in ("running", "streaming"):
        problems.append(f"{name} state {me.state!r}")
    if leader is not None and me.tl != leader.tl:
        problems.append(f"{name} TL {me.tl} != leader TL {leader.tl}")
    lag = _to_int(me.lag_mb)
    if lag is None or lag > max_lag_mb:
        problems.append(f"{name} lag {me.lag_mb!r}")
    if leader is not None and not problems:
        n = cluster.streaming_count(cluster.topo.node(leader.name))
        if n != len(cluster.nodes) - 1:
            problems.append(f"{n} replicas streaming from {leader.name}")
    return problems


def start_and_wait_rejoin(cluster: Cluster, node: Node, timeout: float = 120) -> float:
    """docker start ``node``; wait until it's a streaming replica on the current TL."""
    t0 = time.monotonic()
    if not cluster.is_running(node):
        cluster.start(node)

    def rejoined():
        problems = rejoin_problems(cluster, node.name)
        if problems:
            raise AssertionError("; ".join(problems))
        return True

    wait_until(rejoined, timeout, f"{node.name} rejoins as a streaming replica on the current "
                                  f"timeline", interval=1.0)
    return time.monotonic() - t0


def restore_all(cluster: Cluster) -> list[str]:
    """Best effort: start every stopped node container. Returns the names started."""
    started = []
    for n in cluster.nodes:
        try:
            if not cluster.is_running(n):
                cluster.start(n)
                started.append(n.name)
        except Exception:  # noqa: BLE001
            pass
    return started
