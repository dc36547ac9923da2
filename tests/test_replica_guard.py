"""The replica guard's decision (roles/patroni/files/dine360_replica_guard.py).

The guard restarts Patroni on a replica that Patroni started on a diverged timeline without
pg_rewind (the live proof is on the lab: docs/failover.md). Here: when it restarts, when it
waits, and that it never touches a primary or a replica that is only catching up.
"""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = (Path(__file__).resolve().parents[1] / "collections/ansible_collections/dine360/saas/roles/patroni/files"
          / "dine360_replica_guard.py")
spec = importlib.util.spec_from_file_location("dine360_replica_guard", SCRIPT)
guard = importlib.util.module_from_spec(spec)
spec.loader.exec_module(guard)

STUCK = ("FATAL:  could not start WAL streaming: ERROR:  requested starting point 0/64000000 on timeline 7 "
         "is not in this server's history\nDETAIL:  This server's history forked from timeline 7 at 0/630D6590.\n")
STARTING = {"role": "replica", "state": "starting"}


def test_stuck_replica_is_restarted_after_the_grace_period():
    action, state, message = guard.decide(STARTING, STUCK, 1000, {}, 60, 600)
    assert action == "wait" and state["first_seen"] == 1000 and "60 s" in message
    action, state, _ = guard.decide(STARTING, STUCK, 1059, state, 60, 600)
    assert action == "wait"
    action, state, message = guard.decide(STARTING, STUCK, 1061, state, 60, 600)
    assert action == "restart" and state == {"last_restart": 1061} and "pg_rewind" in message


def test_at_most_one_restart_per_interval():
    state = {"last_restart": 1000}
    action, state, _ = guard.decide(STARTING, STUCK, 1100, state, 60, 600)
    action, state, message = guard.decide(STARTING, STUCK, 1200, state, 60, 600)
    assert action == "wait" and "leaving it" in message
    action, state, _ = guard.decide(STARTING, STUCK, 1700, state, 60, 600)
    assert action == "restart"


@pytest.mark.parametrize("member, journal", [
    ({"role": "primary", "state": "running"}, STUCK),
    ({"role": "master", "state": "starting"}, STUCK),
    ({"role": "replica", "state": "running"}, STUCK),
    ({"role": "replica", "state": "starting"}, "LOG:  restored log file \"000000080000000000000064\" from archive\n"),
    (None, STUCK),
])
def test_never_acts_on_a_primary_a_healthy_replica_or_one_catching_up(member, journal):
    action, state, message = guard.decide(member, journal, 5000, {"first_seen": 1, "last_restart": 0}, 60, 600)
    assert action == "none" and message is None and "first_seen" not in state
