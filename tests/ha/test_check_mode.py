"""Check mode previews a change without making it (issue 18).

k01: ``site.yml --check --diff`` on the converged platform finishes without a failure and
     reports ``changed=0`` on every host (read-only tasks run in check mode, waits for changes
     that were not made are skipped).
k02: with one setting changed (``-e pgbouncer_server_idle_timeout=...``), a preview
     (``db_cluster.yml --check --diff --tags pgbouncer_config``, the DB tier's part of site.yml)
     shows that change in its diff, on every PostgreSQL node, and changes nothing.
"""

from __future__ import annotations

import re
import time

from test_backup import playbook


def _recap(out: str) -> dict[str, dict[str, int]]:
    return {m[1]: {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m[2])}
            for m in re.finditer(r"^(\S+)\s+: (ok=.*)$", out, re.M)}


def _changed_tasks(out: str) -> list[str]:
    """'TASK [...] -> host' for every task the run reported changed (the run's tail may not hold them)."""
    found, task = [], None
    for line in out.splitlines():
        if line.startswith("TASK ["):
            task = line.split("]", 1)[0][6:]
        elif line.startswith("changed: [") and task:
            found.append(f"{task} -> {line[10:].split(']', 1)[0]}")
    return found


def test_k01_site_check_mode_reports_no_change(topology):
    t0 = time.monotonic()
    proc = playbook(topology, "site.yml", "--check", "--diff", check=False)
    secs = time.monotonic() - t0
    out = proc.stdout + proc.stderr
    recap = _recap(proc.stdout)
    print(f"\nsite.yml --check --diff on the converged platform: {secs:.0f} s, rc={proc.returncode}, "
          f"changed per host {({h: r.get('changed') for h, r in recap.items()})}")
    assert proc.returncode == 0, out[-6000:]
    assert recap, out[-3000:]
    assert all(r.get("failed", 0) == 0 and r.get("unreachable", 0) == 0 for r in recap.values()), recap
    changed = {h: r["changed"] for h, r in recap.items() if r.get("changed")}
    assert not changed, f"check mode reports changes on a converged platform: {changed}: {_changed_tasks(out)}"


def test_k02_a_changed_setting_shows_in_the_diff_and_changes_nothing(topology, cluster):
    conf = "/etc/pgbouncer/pgbouncer.ini"
    before = {n.name: cluster.dexec(n, ["cat", conf]).stdout for n in cluster.topo.nodes}
    current = re.search(r"^server_idle_timeout\s*=\s*(\d+)", next(iter(before.values())), re.M)
    assert current, "server_idle_timeout not in pgbouncer.ini"
    wanted = int(current[1]) + 17
    proc = playbook(topology, "db_cluster.yml", "--check", "--diff", "--tags", "pgbouncer_config",
                    "-e", f"pgbouncer_server_idle_timeout={wanted}", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    recap = _recap(proc.stdout)
    for node in cluster.topo.nodes:
        assert recap.get(node.name, {}).get("changed", 0) >= 1, f"{node.name}: no change previewed\n{out[-4000:]}"
    assert f"+server_idle_timeout = {wanted}" in out.replace("  ", " "), out[-6000:]
    after = {n.name: cluster.dexec(n, ["cat", conf]).stdout for n in cluster.topo.nodes}
    assert after == before, "check mode changed pgbouncer.ini"
