"""Redis + Sentinel on the live tier (the redis role): authentication, replication, and a
real failover of the master measured end to end.

Reads the topology's ``app`` section: ``redis_nodes`` ([{name, address, container}]),
``redis_password``, ``redis_port``, ``redis_sentinel_port`` and ``redis_master_name``;
skipped when the topology has no Redis nodes. Every command runs inside the node
containers with ``docker exec ... redis-cli``; the password travels in the environment
(``REDISCLI_AUTH``), never on a command line.

The tests run in file order: the failover test stops the master's redis-server for real
(SIGKILL, then a stop so that systemd does not bring it back at once) and the last test
starts it again and waits until Sentinel has turned it into a replica of the new master.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from dataclasses import dataclass

import pytest

import halib

FAILOVER_TIMEOUT = 90.0
REJOIN_TIMEOUT = 90.0


@dataclass(frozen=True)
class RedisNode:
    name: str
    address: str
    container: str


@dataclass
class RedisTier:
    nodes: list[RedisNode]
    password: str
    port: int
    sentinel_port: int
    master_name: str

    def cli(self, node: RedisNode, *args: str, sentinel: bool = False, auth: bool = True,
            host: str = "127.0.0.1", timeout: float = 15) -> subprocess.CompletedProcess:
        """redis-cli inside ``node``'s container; ``REDISCLI_AUTH`` comes from this process's env."""
        port = self.sentinel_port if sentinel else self.port
        argv = [halib.DOCKER, "exec"]
        env = dict(os.environ)
        env.pop("REDISCLI_AUTH", None)
        if auth:
            argv += ["-e", "REDISCLI_AUTH"]
            env["REDISCLI_AUTH"] = self.password
        argv += [node.container, "redis-cli", "--no-auth-warning", "-h", host, "-p", str(port), *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)

    def out(self, node: RedisNode, *args: str, **kw) -> str:
        proc = self.cli(node, *args, **kw)
        if proc.returncode != 0:
            raise RuntimeError(f"redis-cli {' '.join(args)} on {node.name}: rc={proc.returncode} "
                               f"{proc.stderr.strip()}")
        return proc.stdout.strip()

    def role(self, node: RedisNode) -> list[str]:
        return self.out(node, "ROLE", timeout=5).splitlines()

    def sentinel_master(self, node: RedisNode) -> str | None:
        """The master's address according to the Sentinel on ``node`` (None when it has none)."""
        lines = self.out(node, "SENTINEL", "get-master-addr-by-name", self.master_name,
                         sentinel=True, timeout=5).splitlines()
        return lines[0] if len(lines) == 2 and lines[1] == str(self.port) else None

    def by_address(self, address: str) -> RedisNode:
        return next(n for n in self.nodes if n.address == address)

    def docker(self, node: RedisNode, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([halib.DOCKER, "exec", node.container, *argv], capture_output=True,
                              text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def redis(topology) -> RedisTier:
    app = topology.raw.get("app") or {}
    if not app.get("redis_nodes"):
        pytest.skip("the topology has no Redis nodes (app.redis_nodes): no redis_cluster group deployed")
    missing = [k for k in ("redis_password", "redis_port", "redis_sentinel_port", "redis_master_name")
               if k not in app]
    if missing:
        pytest.fail(f"topology app section lacks {missing}")
    tier = RedisTier(
        nodes=[RedisNode(n["name"], n["address"], n["container"]) for n in app["redis_nodes"]],
        password=app["redis_password"], port=int(app["redis_port"]),
        sentinel_port=int(app["redis_sentinel_port"]), master_name=app["redis_master_name"])
    assert len(tier.nodes) >= 3, f"Redis needs 3 nodes, the topology lists {len(tier.nodes)}"
    yield tier
    # Leave the tier whole even when a test failed half-way.
    for node in tier.nodes:
        if tier.docker(node, "systemctl", "is-active", "--quiet", "redis-server").returncode != 0:
            tier.docker(node, "systemctl", "reset-failed", "redis-server")
            tier.docker(node, "systemctl", "start", "redis-server")
            print(f"\n[teardown] started redis-server on {node.name}")


def wait_healthy(redis: RedisTier, timeout: float = 60) -> tuple[RedisNode, list[RedisNode]]:
    """One master named by every Sentinel, every other node its replica with the link up."""
    def check():
        views = {redis.sentinel_master(n) for n in redis.nodes}
        if len(views) != 1 or None in views:
            return None
        master = redis.by_address(views.pop())
        if redis.role(master)[0] != "master":
            return None
        replicas = [n for n in redis.nodes if n != master]
        for node in replicas:
            role = redis.role(node)
            if role[:2] != ["slave", master.address] or role[3] != "connected":
                return None
        return master, replicas
    return halib.wait_until(check, timeout, "Redis: one master named by every Sentinel, the others linked replicas")


def test_auth_required(redis):
    for node in redis.nodes:
        for sentinel in (False, True):
            what = f"{'Sentinel' if sentinel else 'Redis'} on {node.name}"
            proc = redis.cli(node, "PING", sentinel=sentinel, auth=False)
            assert "NOAUTH" in proc.stdout + proc.stderr, f"{what} answered PING without a password: {proc.stdout!r}"
            # Also over the node address (bind), not only loopback.
            proc = redis.cli(node, "PING", sentinel=sentinel, auth=False, host=node.address)
            assert "NOAUTH" in proc.stdout + proc.stderr, f"{what} ({node.address}) answered without a password"
            assert redis.out(node, "PING", sentinel=sentinel) == "PONG", f"{what} refused redis_password"


def test_one_master_replicating_to_the_others(redis):
    master, replicas = wait_healthy(redis)
    print(f"\nmaster {master.name} ({master.address}); replicas {[r.name for r in replicas]}")
    info = redis.out(master, "INFO", "replication")
    assert f"connected_slaves:{len(replicas)}" in info, info
    key, value = f"d360:hatest:repl:{secrets.token_hex(4)}", secrets.token_hex(8)
    assert redis.out(master, "SET", key, value, "EX", "600") == "OK"
    # WAIT: the write reached every replica.
    assert int(redis.out(master, "WAIT", str(len(replicas)), "5000")) == len(replicas)
    for node in replicas:
        assert redis.out(node, "GET", key) == value, f"{key} not replicated to {node.name}"
        proc = redis.cli(node, "SET", key, "x")
        assert "READONLY" in proc.stdout + proc.stderr, f"replica {node.name} accepted a write"
    policy = redis.out(master, "CONFIG", "GET", "maxmemory-policy").splitlines()
    print(f"maxmemory-policy {policy[1]}, maxmemory {redis.out(master, 'CONFIG', 'GET', 'maxmemory').splitlines()[1]}")


def test_sentinel_failover(redis, state):
    old, replicas = wait_healthy(redis)
    key, value = f"d360:hatest:failover:{secrets.token_hex(4)}", secrets.token_hex(8)
    assert redis.out(old, "SET", key, value, "EX", "3600") == "OK"
    assert int(redis.out(old, "WAIT", str(len(replicas)), "5000")) == len(replicas)
    state.update(old=old, key=key, value=value)

    # A crash: SIGKILL, then stop, so that systemd's Restart=always does not revive it.
    t0 = time.monotonic()
    proc = redis.docker(old, "sh", "-c", "systemctl kill -s KILL redis-server; systemctl stop redis-server")
    assert proc.returncode == 0, proc.stderr
    assert redis.docker(old, "systemctl", "is-active", "--quiet", "redis-server").returncode != 0

    def new_master():
        views = {redis.sentinel_master(n) for n in replicas}
        if len(views) == 1 and None not in views:
            address = views.pop()
            if address != old.address:
                return redis.by_address(address)
        return None
    new = halib.wait_until(new_master, FAILOVER_TIMEOUT, "the Sentinels did not name a new master", interval=0.2)
    t_named = time.monotonic() - t0

    def writable():
        proc = redis.cli(new, "SET", f"{key}:after", "1", "EX", "3600", timeout=5)
        return proc.stdout.strip() == "OK"
    halib.wait_until(writable, FAILOVER_TIMEOUT, f"the new master {new.name} did not accept a write", interval=0.2)
    t_write = time.monotonic() - t0
    down_after = redis.out(new, "SENTINEL", "MASTER", redis.master_name, sentinel=True).splitlines()
    down_after_ms = dict(zip(down_after[0::2], down_after[1::2])).get("down-after-milliseconds")
    print(f"\n[redis failover] master {old.name} killed; Sentinels named {new.name} after {t_named:.1f}s, "
          f"first write accepted after {t_write:.1f}s (down-after-milliseconds {down_after_ms})")
    state.update(new=new, t_named=t_named, t_write=t_write)

    assert redis.out(new, "GET", key) == value, "the key written before the failover is lost"
    # The remaining replica follows the new master.
    for node in replicas:
        if node == new:
            continue
        halib.wait_until(lambda n=node: redis.role(n)[:2] == ["slave", new.address], 60,
                         f"{node.name} does not replicate from the new master {new.name}")
        halib.wait_until(lambda n=node: redis.out(n, "GET", f"{key}:after") == "1", 30,
                         f"{node.name} did not receive the write made after the failover")


def test_old_master_rejoins_as_replica(redis, state):
    if "new" not in state:
        pytest.skip("the failover test did not complete")
    old, new, key, value = state["old"], state["new"], state["key"], state["value"]
    t0 = time.monotonic()
    redis.docker(old, "systemctl", "reset-failed", "redis-server")
    proc = redis.docker(old, "systemctl", "start", "redis-server")
    assert proc.returncode == 0, proc.stderr
    # Sentinel turns the returning master into a replica of the new one (+convert-to-slave).
    halib.wait_until(lambda: redis.role(old)[:2] == ["slave", new.address] and redis.role(old)[3] == "connected",
                     REJOIN_TIMEOUT, f"{old.name} did not rejoin as a replica of {new.name}")
    print(f"\n[redis rejoin] {old.name} replicates from {new.name} {time.monotonic() - t0:.1f}s after its start")
    halib.wait_until(lambda: redis.out(old, "GET", key) == value, 30, f"{key} missing on {old.name}")
    master, replicas = wait_healthy(redis)
    assert master == new and old in replicas
    # Sentinel persisted the new topology: the old master's redis.conf now names the new one.
    conf = redis.docker(old, "grep", "-E", "^replicaof ", "/etc/redis/redis.conf").stdout.strip()
    assert conf == f"replicaof {new.address} {redis.port}", conf
    redis.out(new, "DEL", key, f"{key}:after")
