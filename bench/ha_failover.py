#!/usr/bin/env python3
"""Failover / switchover benchmark for the HA PostgreSQL tier.

    python bench/ha_failover.py --topology <json> --runs 5 [--output docs/BENCHMARKS.md]

Runs N unplanned failovers (a writer commits every ~50 ms through the VIP write
port; the primary's container is hard-killed; write outage measured; the old
primary is started again and must rejoin as a streaming replica) and N planned
switchovers (``patronictl switchover`` to the sync standby, outage measured).
Prints min/median/max; with --output rewrites the section between
``<!-- ha_failover:start -->`` and ``<!-- ha_failover:end -->`` in that file.

This is destructive: it kills and restarts the tier's node containers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import sys
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "ha"))

import halib  # noqa: E402

START = "<!-- ha_failover:start -->"
END = "<!-- ha_failover:end -->"


def log(msg: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {msg}", flush=True)


def machine() -> str:
    mem_kb = 0
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    mem_kb = int(line.split()[1])
    except OSError:
        pass
    return (f"{os.cpu_count()} vCPU, {mem_kb / 1024 / 1024:.1f} GiB RAM, "
            f"{platform.system()} {platform.release()}")


def stats(values: list[float]) -> tuple[str, str, str]:
    if not values:
        return ("-", "-", "-")
    return (f"{min(values):.2f}", f"{statistics.median(values):.2f}", f"{max(values):.2f}")


def render(results: dict, timings: dict, runs: int, sync: bool) -> str:
    fo = [r.outage.seconds for r in results["failover"] if r.outage]
    rj = results["rejoin"]
    so = [r.outage.seconds for r in results["switchover"] if r.outage]
    lost_fo = sum(len(r.lost_ids) for r in results["failover"])
    lost_so = sum(len(r.lost_ids) for r in results["switchover"])
    rows = [
        ("Unplanned failover (docker kill of the primary): write outage",
         len(fo), *stats(fo), lost_fo),
        ("Old primary rejoins as streaming replica (from docker start)",
         len(rj), *stats(rj), "-"),
        ("Planned switchover (patronictl switchover): write outage",
         len(so), *stats(so), lost_so),
    ]
    lines = [
        START,
        "## HA failover (bench/ha_failover.py)",
        "",
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {machine()}; "
        f"{runs} run(s) requested per scenario.",
        "",
        f"Patroni: ttl={timings.get('ttl')} s, loop_wait={timings.get('loop_wait')} s, "
        f"retry_timeout={timings.get('retry_timeout')} s, synchronous_mode={sync}.",
        "",
        "Outage = longest gap between consecutive acknowledged commits of a writer that "
        "commits every ~50 ms through the VIP write port (HAProxy -> PgBouncer -> "
        "PostgreSQL), from the last commit before the event on.",
        "",
        "| Scenario | Runs | Min (s) | Median (s) | Max (s) | Acknowledged commits lost |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]} |" for r in rows]
    if results["errors"]:
        lines += ["", "Runs that failed:", ""]
        lines += [f"- {e}" for e in results["errors"]]
    lines.append(END)
    return "\n".join(lines) + "\n"


def write_section(path: str, section: str, start: str = START, end: str = END) -> None:
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    else:
        text = "# Benchmarks\n\nResults of the scripts in `bench/`, rewritten by them.\n\n"
    if start in text and end in text and text.index(start) < text.index(end):
        head = text[:text.index(start)]
        tail = text[text.index(end) + len(end):]
        text = head + section.rstrip("\n") + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--topology", default=os.environ.get("D360_TOPOLOGY"),
                    help="topology JSON (default: $D360_TOPOLOGY)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--output", help="markdown file whose ha_failover section is rewritten")
    ap.add_argument("--rejoin-timeout", type=float, default=180)
    ap.add_argument("--label", default="",
                    help="names a separate section (e.g. a timing profile), so several can be kept")
    args = ap.parse_args(argv)
    if not args.topology:
        ap.error("--topology (or D360_TOPOLOGY) is required")
    if args.runs < 1:
        ap.error("--runs must be >= 1")

    cluster = halib.Cluster(halib.load_topology(args.topology))
    started = halib.restore_all(cluster)
    if started:
        log(f"started stopped node containers first: {started}")
    cfg = cluster.show_config()
    timings = {k: cfg.get(k, default) for k, default in
               (("ttl", 30), ("loop_wait", 10), ("retry_timeout", 10))}
    log(f"Patroni timings {timings}; machine: {machine()}")

    results: dict = {"failover": [], "rejoin": [], "switchover": [], "errors": []}
    tdb = halib.create_test_db(cluster, "d360_habench")
    try:
        for i in range(1, args.runs + 1):
            log(f"failover {i}/{args.runs}: waiting for a healthy cluster")
            try:
                cluster.wait_healthy(args.rejoin_timeout)
                res = halib.run_failover(cluster, tdb, tag=f"bench-fo-{uuid.uuid4().hex[:8]}",
                                         log=log)
                results["failover"].append(res)
                log(f"failover {i}: {res.old_leader} -> {res.new_leader}, outage "
                    f"{res.outage.seconds:.2f}s, lost {len(res.lost_ids)}")
            except Exception as exc:  # noqa: BLE001 - recorded, run continues
                results["errors"].append(f"failover {i}: {exc}")
                log(f"failover {i} FAILED: {exc}")
            victims = [n for n in cluster.nodes if not cluster.is_running(n)]
            for node in victims:
                try:
                    took = halib.start_and_wait_rejoin(cluster, node, args.rejoin_timeout)
                    results["rejoin"].append(took)
                    log(f"rejoin {i}: {node.name} streaming after {took:.1f}s")
                except Exception as exc:  # noqa: BLE001
                    results["errors"].append(f"rejoin {i} ({node.name}): {exc}")
                    log(f"rejoin {i} FAILED: {exc}")

        for i in range(1, args.runs + 1):
            log(f"switchover {i}/{args.runs}: waiting for a healthy cluster")
            try:
                cluster.wait_healthy(args.rejoin_timeout)
                res = halib.run_switchover(cluster, tdb,
                                           tag=f"bench-so-{uuid.uuid4().hex[:8]}", log=log)
                results["switchover"].append(res)
                log(f"switchover {i}: {res.old_leader} -> {res.new_leader}, outage "
                    f"{res.outage.seconds:.2f}s, lost {len(res.lost_ids)}")
            except Exception as exc:  # noqa: BLE001
                results["errors"].append(f"switchover {i}: {exc}")
                log(f"switchover {i} FAILED: {exc}")
    finally:
        halib.restore_all(cluster)
        try:
            cluster.wait_healthy(args.rejoin_timeout)
            halib.drop_test_db(cluster, tdb)
        except Exception as exc:  # noqa: BLE001
            log(f"cleanup: {exc}")

    sync = bool(cluster.topo.synchronous_mode)
    print()
    for name, values in (("failover outage", [r.outage.seconds for r in results["failover"]]),
                         ("rejoin time", results["rejoin"]),
                         ("switchover outage", [r.outage.seconds for r in results["switchover"]])):
        lo, med, hi = stats(values)
        print(f"{name:<18} n={len(values)} min={lo}s median={med}s max={hi}s")
    lost = sum(len(r.lost_ids) for r in results["failover"] + results["switchover"])
    print(f"acknowledged commits lost: {lost}; failed runs: {len(results['errors'])}")

    if args.output:
        section = render(results, timings, args.runs, sync)
        start, end = START, END
        if args.label:
            start = START.replace(":start", f":{args.label}:start")
            end = END.replace(":end", f":{args.label}:end")
            section = (section.replace(START, start).replace(END, end)
                       .replace("## HA failover (bench/ha_failover.py)",
                                f"## HA failover, {args.label} (bench/ha_failover.py --label {args.label})"))
        write_section(args.output, section, start, end)
        log(f"wrote {args.output}")
    return 1 if results["errors"] or (sync and lost) else 0


if __name__ == "__main__":
    sys.exit(main())
