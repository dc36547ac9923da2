"""Fixtures for the live HA tier suite (tests/ha).

The suite runs against a deployed tier described by the JSON file named by the
environment variable D360_TOPOLOGY.  Without it every test here is skipped with a
message saying so; CI always sets it.
"""

from __future__ import annotations

import os
import shutil
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import halib  # noqa: E402

TOPOLOGY_ENV = "D360_TOPOLOGY"
SKIP_REASON = (f"{TOPOLOGY_ENV} is unset: the HA suite needs a deployed tier "
               "(set it to the topology JSON written by the deploy playbook)")


def pytest_configure(config):
    config.addinivalue_line("markers", "run_last: run after every other test (it replaces the cluster)")


# Set by molecule's verify (CI): a skipped test there is a failure, Odoo's included.
FORBID_SKIPS_ENV = "D360_FORBID_SKIPS"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get(FORBID_SKIPS_ENV) == "1" and str(item.path).startswith(HERE + os.sep):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped where {FORBID_SKIPS_ENV}=1 (CI) forbids skips: {reason}"


def pytest_collection_modifyitems(config, items):
    # Stable: tests marked run_last (the backup suite, whose final test restores the whole
    # cluster to an earlier time) go after all others, in their own order.
    items.sort(key=lambda item: item.get_closest_marker("run_last") is not None)
    if os.environ.get(TOPOLOGY_ENV):
        return
    marker = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if str(item.path).startswith(HERE + os.sep):
            item.add_marker(marker)


@pytest.fixture(scope="session")
def topology() -> halib.Topology:
    path = os.environ.get(TOPOLOGY_ENV)
    if not path:
        pytest.skip(SKIP_REASON)
    if not os.path.isfile(path):
        pytest.fail(f"{TOPOLOGY_ENV}={path} does not exist")
    return halib.load_topology(path)


@pytest.fixture(scope="session")
def cluster(topology) -> halib.Cluster:
    if shutil.which(halib.DOCKER) is None:
        pytest.fail(f"{halib.DOCKER!r} not found on PATH: node checks go through docker exec")
    c = halib.Cluster(topology)
    down = [n.container for n in topology.nodes if not c.is_running(n)]
    if down:
        pytest.fail(f"node containers not running at the start of the suite: {down}")
    return c


@pytest.fixture(scope="module")
def tdb(cluster):
    """Scratch role + database ``d360_hatest`` with table ``ticks``; dropped at the end.

    Teardown first restarts any node container a test left stopped, so that the
    tier is whole again, then drops the database and role (best effort).
    """
    db = halib.create_test_db(cluster, "d360_hatest")
    yield db
    started = halib.restore_all(cluster)
    if started:
        print(f"\n[teardown] restarted stopped node containers: {started}")
    try:
        halib.drop_test_db(cluster, db)
    except Exception as exc:  # noqa: BLE001 - best effort
        print(f"\n[teardown] could not drop {db.dbname}/{db.user}: {exc}")


@pytest.fixture(scope="module")
def state() -> dict:
    """Facts handed from one ordered test to the next (e.g. the killed node)."""
    return {}
