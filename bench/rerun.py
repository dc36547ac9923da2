#!/usr/bin/env python3
"""Time idempotent re-runs on the lab: Mitogen (the default strategy) against Ansible's own.

    python bench/rerun.py [--playbook playbooks/db_cluster.yml[:RUNS] ...] [--runs 3] [--output docs/BENCHMARKS.md]

For each playbook, alternates runs with the project's default strategy
(plugins/strategy/dine360_linear.py, Mitogen) and with DINE360_MITOGEN=0 (Ansible's
linear strategy, one Python process per task), on the existing lab. Every run must
report changed=0 on every host, or the benchmark fails. Prints min/median/max and,
with --output, rewrites the section between ``<!-- rerun:start -->`` and
``<!-- rerun:end -->``.
"""
import argparse
import datetime as dt
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from ha_failover import log, machine, write_section  # noqa: E402

START = "<!-- rerun:start -->"
END = "<!-- rerun:end -->"
SIDES = (("mitogen", "1"), ("ansible", "0"))


def loadavg():
    with open("/proc/loadavg", encoding="ascii") as fh:
        return float(fh.read().split()[0])


def run_once(playbook, mitogen_flag):
    env = dict(os.environ, DINE360_MITOGEN=mitogen_flag)
    venv_bin = os.path.join(ROOT, ".venv", "bin")
    env["PATH"] = venv_bin + os.pathsep + env["PATH"]
    t0 = time.monotonic()
    p = subprocess.run([os.path.join(venv_bin, "ansible-playbook"), "-i", "inventories/lab", playbook],
                       cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    took = time.monotonic() - t0
    recap = re.findall(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", p.stdout, re.M)
    changed = sum(int(r[2]) for r in recap)
    if p.returncode != 0 or not recap or changed:
        sys.stdout.write(p.stdout[-4000:])
        raise SystemExit(f"{playbook} (DINE360_MITOGEN={mitogen_flag}): rc={p.returncode}, changed={changed}")
    tasks = sum(int(r[1]) for r in recap)
    return took, tasks


def fmt(values):
    return f"{min(values):.0f} | {statistics.median(values):.0f} | {max(values):.0f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--playbook", action="append",
                    help="PLAYBOOK[:RUNS], repeatable (default: playbooks/db_cluster.yml)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--output")
    args = ap.parse_args()
    plan = [(p.split(":")[0], int(p.split(":")[1]) if ":" in p else args.runs)
            for p in (args.playbook or ["playbooks/db_cluster.yml"])]
    playbooks = [pb for pb, _ in plan]
    results = {}
    for pb, runs in plan:
        for i in range(runs):
            for side, flag in SIDES:
                took, tasks = run_once(pb, flag)
                load = loadavg()
                results.setdefault((pb, side), []).append((took, tasks, load))
                log(f"{pb} {side} run {i + 1}: {took:.1f} s, {tasks} task results, changed=0, load {load:.1f}")
    rows = []
    for pb in playbooks:
        mit = [t for t, _, _ in results[(pb, "mitogen")]]
        plain = [t for t, _, _ in results[(pb, "ansible")]]
        tasks = results[(pb, "mitogen")][0][1]
        ratio = statistics.median(plain) / statistics.median(mit)
        target = "< 60 s" if pb.endswith("db_cluster.yml") else "-"
        rows.append(f"| `{pb}` (changed=0, {tasks} task results) | Mitogen (default) | {fmt(mit)} | {target} |")
        rows.append(f"| `{pb}` | Ansible's linear (`DINE360_MITOGEN=0`) | {fmt(plain)} | {ratio:.1f}x slower |")
        print(f"{pb}: mitogen median {statistics.median(mit):.1f} s, ansible median {statistics.median(plain):.1f} s, "
              f"{ratio:.2f}x")
    loads = [ld for v in results.values() for _, _, ld in v]
    if args.output:
        section = "\n".join([
            START,
            "## Idempotent re-run (bench/rerun.py)",
            "",
            f"Measured {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC on {machine()}, on the existing lab"
            f" (docker connection, pipelining on); {', '.join(f'{pb}: {n}' for pb, n in plan)} run(s) per side,"
            f" alternating; every run reported"
            f" changed=0 on every host. 1-minute load when the runs ended: {min(loads):.1f} to {max(loads):.1f}.",
            "",
            "| Playbook | Strategy | Min (s) | Median (s) | Max (s) | Target / ratio |",
            "|---|---|---:|---:|---:|---|",
            *rows,
            END,
        ]) + "\n"
        write_section(args.output, section, START, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
