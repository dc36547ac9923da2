#!/usr/bin/env python3
"""Onboard restaurants with pos_restaurant by cloning the group template, against `odoo -i`.

    .venv/bin/python bench/onboarding.py [--topology .artifacts/lab-topology.json]
        [--tenants 50] [--init-sample 50] [--markdown docs/BENCHMARKS.md] [--output r.json]

Needs the lab (or any deployed tier) built with ODOO_SOURCE, so that Odoo runs on the app
servers and the group ``core`` has its sealed template (pos_restaurant). Both sides end
with a database in which Odoo runs with pos_restaurant installed:

* clone (ours): the restaurants are added to ``saas_tenants`` (plan starter, group core)
  and onboarded the way an operator does it, ``playbooks/tenants.yml --tags onboard``:
  database and roles, ``CREATE DATABASE ... TEMPLATE core-template``, a fresh identity
  (uuid, admin password, company, web.base.url), the filestore copy, HAProxy routing.
  Timed twice: one restaurant alone (``-e tenant=<name>``, the whole playbook run), and
  all N in one run (per restaurant = total / N);
* init (the usual way): for each restaurant an empty database (owner the group role,
  template0, as Odoo's own database manager makes it) and
  ``odoo -d <db> -i pos_restaurant --stop-after-init --without-demo=all`` on the first
  app server, straight to the primary's PostgreSQL (no PgBouncer in its way). With
  --init-sample smaller than --tenants, that many are initialised and the per-restaurant
  figure is their mean (said so in the output).

Every database the run made is dropped at the end (the cloned ones by ``--tags offboard``
with tenants_force_offboard). Prints the figures and the ratio init / clone per
restaurant; --markdown rewrites the section between ``<!-- onboarding:start -->`` and
``<!-- onboarding:end -->``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "ha"))
from ha_failover import log, machine, write_section  # noqa: E402
import halib  # noqa: E402

START, END = "<!-- onboarding:start -->", "<!-- onboarding:end -->"
PLAYBOOK = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")


def tenants_run(topo, entries, tags, tenant=None, extra=None):
    ev = {"saas_tenants": entries}
    ev.update(extra or {})
    with tempfile.NamedTemporaryFile("w", suffix=".json", dir=os.path.join(ROOT, ".artifacts"), delete=False) as fh:
        json.dump(ev, fh)
    os.chmod(fh.name, 0o600)
    cmd = [PLAYBOOK, "-i", topo.inventory, "playbooks/tenants.yml", "--tags", tags, "-e", f"@{fh.name}"]
    if tenant:
        cmd += ["-e", f"tenant={tenant}"]
    t0 = time.monotonic()
    try:
        # profile_tasks: the slowest tasks of the run are logged, to see where the time goes.
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=3600,
                           env=dict(os.environ, ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_tasks",
                                    PROFILE_TASKS_TASK_OUTPUT_LIMIT="6", ANSIBLE_NOCOLOR="1"))
    finally:
        os.unlink(fh.name)
    secs = time.monotonic() - t0
    if p.returncode != 0:
        raise SystemExit(f"tenants.yml --tags {tags} failed:\n{(p.stdout + p.stderr)[-4000:]}")
    slow = [ln.strip() for ln in p.stdout.splitlines() if re.search(r"-{3,} \d+\.\d+s$", ln.strip())]
    for ln in slow[:6]:
        log(f"    {ln}")
    return secs, [re.sub(r"\s*-{3,}\s*", ": ", ln) for ln in slow[:6]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--topology", default=os.path.join(ROOT, ".artifacts", "lab-topology.json"))
    ap.add_argument("--tenants", type=int, default=50)
    ap.add_argument("--init-sample", type=int, default=50)
    ap.add_argument("--markdown")
    ap.add_argument("--output")
    args = ap.parse_args()
    os.makedirs(os.path.join(ROOT, ".artifacts"), exist_ok=True)

    topo = halib.load_topology(args.topology)
    cluster = halib.Cluster(topo)
    app = topo.raw.get("app") or {}
    if not app.get("odoo"):
        raise SystemExit("Odoo is not deployed on this tier (built without ODOO_SOURCE): nothing to measure")
    base = [dict(t) for t in topo.saas_tenants]
    names = [f"bench-clone-{i:03d}" for i in range(args.tenants + 1)]
    single, batch = names[0], names[1:]
    entries = base + [{"name": n, "plan": "starter", "group": "core", "state": "present"} for n in names]
    app1 = app["app_nodes"][0]["container"]
    primary = cluster.wait_primary(60)
    results = {"machine": machine(), "tenants": args.tenants, "init_sample": args.init_sample,
               "load_start": os.getloadavg()[1]}

    try:
        log(f"clone: one restaurant ({single}) with --tags onboard -e tenant={single}")
        results["clone_single_s"], results["slow_single"] = tenants_run(topo, base + [entries[len(base)]], "onboard",
                                                                        tenant=single)
        log(f"  {results['clone_single_s']:.1f} s")
        log(f"clone: {len(batch)} restaurants in one --tags onboard run")
        results["clone_batch_s"], results["slow_batch"] = tenants_run(topo, entries, "onboard")
        results["clone_per_restaurant_s"] = results["clone_batch_s"] / len(batch)
        log(f"  {results['clone_batch_s']:.1f} s, {results['clone_per_restaurant_s']:.2f} s per restaurant")
        # Each clone serves its login page (Odoo really runs on it).
        for n in (batch[0], batch[-1]):
            out = cluster.docker(["exec", app1, "python3", "-c",
                                  "import urllib.request,sys;r=urllib.request.Request('http://%s:%d/web/login',"
                                  "headers={'Host':'%s.%s'});print(urllib.request.urlopen(r,timeout=120).status)"
                                  % (app["app_nodes"][0]["address"], int(app["odoo_http_port"]), n, app["domain"])],
                                 check=False)
            if "200" not in out.stdout:
                log(f"  warning: {n}/web/login via {app1}: {out.stdout.strip()} {out.stderr.strip()[-300:]}")

        init_times = []
        conf = "/etc/odoo/odoo.conf"
        for i in range(args.init_sample):
            db = f"bench-init-{i:03d}"
            cluster.psql(primary, f'CREATE DATABASE "{db}" OWNER odoo_core TEMPLATE template0 ENCODING \'UTF8\'')
            t0 = time.monotonic()
            p = cluster.docker(["exec", "-u", "odoo", app1, "/opt/odoo/bin/odoo-server", f"--config={conf}",
                                f"--database={db}", "--init=pos_restaurant", "--without-demo=all", "--no-http",
                                "--workers=0", "--max-cron-threads=0", "--stop-after-init", "--log-level=warn",
                                f"--db_host={primary.address}", f"--db_port={topo.postgres_port}"],
                               timeout=1800, check=False)
            secs = time.monotonic() - t0
            if p.returncode != 0:
                raise SystemExit(f"odoo -i on {db} failed:\n{p.stderr[-3000:]}")
            init_times.append(secs)
            log(f"init: {db} -i pos_restaurant in {secs:.1f} s")
        results["init_times_s"] = init_times
        results["init_per_restaurant_s"] = statistics.mean(init_times)
        results["init_total_estimate_s"] = results["init_per_restaurant_s"] * args.tenants
        results["ratio_init_over_clone"] = results["init_per_restaurant_s"] / results["clone_per_restaurant_s"]
        log(f"per restaurant: init {results['init_per_restaurant_s']:.1f} s, clone {results['clone_per_restaurant_s']:.2f} s"
            f" -> {results['ratio_init_over_clone']:.0f}x")
    finally:
        log("cleanup: offboarding the cloned restaurants, dropping the init databases")
        gone = base + [{"name": n, "plan": "starter", "group": "core", "state": "absent"} for n in names]
        try:
            tenants_run(topo, gone, "offboard", extra={"tenants_force_offboard": True})
        except SystemExit as exc:
            log(f"  offboard failed: {exc}")
        for i in range(args.init_sample):
            cluster.psql(cluster.wait_primary(60), f'DROP DATABASE IF EXISTS "bench-init-{i:03d}" WITH (FORCE)')
        cluster.docker(["exec", app1, "sh", "-c", "rm -rf /var/lib/odoo/filestore/bench-*"], check=False)

    results["load_end"] = os.getloadavg()[1]
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=2)
    if args.markdown:
        write_section(args.markdown, render(results), START, END)
    print(render(results))
    return 0


def render(r: dict) -> str:
    sample = ("all of them" if r["init_sample"] >= r["tenants"]
              else f"a sample of {r['init_sample']}; the total for {r['tenants']} is that mean times {r['tenants']}")
    return f"""{START}
## Onboarding restaurants: clone of the group template vs `odoo -i` (bench/onboarding.py)

Machine: {r['machine']}; 5-minute load average {r['load_start']:.1f} at the start, {r['load_end']:.1f} at the end
{'(another job shared the machine)' if r['load_start'] > 3 else '(a quiet machine)'}. Lab with Odoo 17 on two app servers; every
restaurant gets `pos_restaurant` (no demo data). Clone = `playbooks/tenants.yml --tags onboard`
(database, roles, `CREATE DATABASE ... TEMPLATE core-template`, fresh uuid/admin
password/company/web.base.url, filestore copy, HAProxy routing, and the proof that ends the
run: each restaurant's login page and admin login through the web VIP). Init = an empty database and
`odoo -d <db> -i pos_restaurant --stop-after-init` on an app server, straight to the primary
({sample}).

| | per restaurant | {r['tenants']} restaurants |
|---|---|---|
| clone, one restaurant alone (whole playbook run) | {r['clone_single_s']:.1f} s | |
| clone, {r['tenants']} in one run | **{r['clone_per_restaurant_s']:.2f} s** | {r['clone_batch_s']:.0f} s |
| `odoo -i pos_restaurant` per database | {r['init_per_restaurant_s']:.1f} s | {r['init_total_estimate_s']:.0f} s |
| **ratio init / clone** | **{r['ratio_init_over_clone']:.0f}x** | |

Targets: one restaurant (the whole run) under 5 s ({'met' if r['clone_single_s'] < 5 else 'missed'}); under 1 s each for
{r['tenants']} in one run ({'met' if r['clone_per_restaurant_s'] < 1 else 'missed'}).

Where the time goes (Ansible's profile_tasks, slowest tasks):

- one restaurant: {'; '.join(r.get('slow_single', []))}
- {r['tenants']} restaurants: {'; '.join(r.get('slow_batch', []))}
{END}
"""


if __name__ == "__main__":
    sys.exit(main())
