#!/usr/bin/env python3
"""Reconcile N tenants with dine360.saas.tenants, against a community.postgresql loop.

    .venv/bin/python bench/tenants_reconcile.py [--tenants 500] [--output results.json]
        [--markdown docs/BENCHMARKS.md] [--reruns 3] [--loop-reruns 1]
        [--max-connections 100] [--keep]

Run it as root or as a user that can run PostgreSQL's initdb; it takes about half an hour
for 500 tenants, nearly all of it in the loop.

Starts a throw-away PostgreSQL 15 server (Debian's binaries, as the ``postgres`` user
when run as root) in a temporary directory, on loopback and a Unix socket, with the
server's default durability settings (fsync on). Then, through ``ansible-playbook``
against localhost (connection local, an empty temporary ansible.cfg, so the repository's
vars plugins stay out of it), times with the wall clock around each run:

* ours: one ``dine360.saas.tenants`` task with the whole list (plan ``starter``, group
  ``core``), first run (creates everything) and idempotent re-run (must be changed=false);
* the loop: ``community.postgresql.postgresql_user`` over the N reporting roles and
  ``community.postgresql.postgresql_db`` over the N databases (owner the group's role,
  template0, UTF8, connection limit), first run and idempotent re-run (changed=0).

The module's re-run is repeated (--reruns, median kept); each run also records the CPU
time of ansible-playbook and its module processes and the load average, since a busy
machine inflates the wall clock of the long loop most.

Everything the first side made is dropped before the second side runs, so both create
from scratch on the same server. Prints a table and the ratios loop / ours; --output
writes the results as JSON, --markdown rewrites this benchmark's section (between
``<!-- tenants_reconcile:start -->`` and ``<!-- tenants_reconcile:end -->``) in that
file. --keep leaves the server running and its directory in place, for debugging.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import psycopg2

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLLECTIONS = os.path.join(ROOT, "collections")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ha_failover import log, machine, write_section  # noqa: E402  (shared by the bench scripts)

START = "<!-- tenants_reconcile:start -->"
END = "<!-- tenants_reconcile:end -->"
PG_BIN = os.environ.get("D360_PG_BIN", "/usr/lib/postgresql/15/bin")
PREFIX = "bench-"
APP_ROLE = "bench_odoo"
GROUP = "core"
SEED = "bench-password-seed-0123456789abcdef"
PLAN = {
    "connection_limit": 10,
    "pool_size": 5,
    "statement_timeout": "60s",
    "storage_quota_mb": 1024,
    "backup_retention_days": 7,
    "reporting_connection_limit": 2,
    "odoo_modules": ["pos_restaurant"],
}
RERUN_TARGET_S = 10.0
RATIO_TARGET = 20.0

# The same settings for both sides; pipelining as in the repository's ansible.cfg.
ANSIBLE_CFG = """[defaults]
interpreter_python = {python}
retry_files_enabled = False
gathering = explicit
stdout_callback = ansible.posix.json

[connection]
pipelining = True
"""

OURS_PLAYBOOK = """\
- name: Reconcile the tenant list with dine360.saas.tenants
  hosts: localhost
  connection: local
  gather_facts: false
  vars_files: [vars.json]
  tasks:
    - name: Reconcile every tenant in one call
      dine360.saas.tenants:
        tenants: "{{ bench_tenants }}"
        plans: "{{ bench_plans }}"
        groups: "{{ bench_groups }}"
        password_seed: "{{ bench_seed }}"
        login_unix_socket: "{{ bench_socket }}"
        login_port: "{{ bench_port }}"
"""

LOOP_PLAYBOOK = """\
- name: The same tenants with community.postgresql, one module run per item
  hosts: localhost
  connection: local
  gather_facts: false
  vars_files: [vars.json]
  module_defaults:
    community.postgresql.postgresql_user: &login
      login_user: postgres
      login_unix_socket: "{{ bench_socket }}"
      login_port: "{{ bench_port }}"
    community.postgresql.postgresql_db: *login
  tasks:
    - name: Application role of the group
      community.postgresql.postgresql_user:
        name: "{{ bench_app_role }}"
        password: "{{ bench_app_password }}"
        role_attr_flags: LOGIN,NOSUPERUSER,NOCREATEDB,NOCREATEROLE,INHERIT

    - name: Reporting role per tenant
      community.postgresql.postgresql_user:
        name: "{{ item.name }}_report"
        password: "{{ item.report_password }}"
        role_attr_flags: LOGIN,NOSUPERUSER,NOCREATEDB,NOCREATEROLE,NOINHERIT
        conn_limit: "{{ bench_plans.starter.reporting_connection_limit }}"
        configuration:
          default_transaction_read_only: "on"
      loop: "{{ bench_loop }}"
      loop_control:
        label: "{{ item.name }}"

    - name: Database per tenant
      community.postgresql.postgresql_db:
        name: "{{ item.name }}"
        owner: "{{ bench_app_role }}"
        template: template0
        encoding: UTF8
        conn_limit: "{{ bench_plans.starter.connection_limit }}"
      loop: "{{ bench_loop }}"
      loop_control:
        label: "{{ item.name }}"
"""

WARMUP_PLAYBOOK = """\
- name: Warm-up (not timed) - byte-compile and load both collections once
  hosts: localhost
  connection: local
  gather_facts: false
  vars_files: [vars.json]
  tasks:
    - name: Ping with community.postgresql
      community.postgresql.postgresql_ping:
        login_user: postgres
        login_unix_socket: "{{ bench_socket }}"
        login_port: "{{ bench_port }}"
    - name: Empty tenant list, check mode
      dine360.saas.tenants:
        tenants: []
        plans: "{{ bench_plans }}"
        groups: "{{ bench_groups }}"
        password_seed: "{{ bench_seed }}"
        login_unix_socket: "{{ bench_socket }}"
        login_port: "{{ bench_port }}"
      check_mode: true
"""


def derive_password(seed: str, purpose: str, name: str) -> str:
    """As the module's derive_password (module_utils/tenants.py): both sides set the same passwords."""
    mac = hmac.new(seed.encode(), f"dine360:{purpose}:{name}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode("ascii").rstrip("=")[:32]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_server_user(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run it as the postgres system user then."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


class PgServer:
    """A PostgreSQL 15 server in a temporary directory (as the unit tests' ``pg_server``)."""

    def __init__(self, max_connections: int) -> None:
        self.base = tempfile.mkdtemp(prefix="d360-bench-pg-")
        self.port = free_port()
        self.data = os.path.join(self.base, "data")
        self.socket_dir = os.path.join(self.base, "sock")
        self.log = os.path.join(self.base, "server.log")
        self.max_connections = max_connections

    def start(self) -> None:
        if not os.path.exists(os.path.join(PG_BIN, "postgres")):
            raise SystemExit(f"PostgreSQL 15 server binaries not found in {PG_BIN}: run scripts/setup.sh")
        os.makedirs(self.socket_dir)
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres", "postgres")
            shutil.chown(self.socket_dir, "postgres", "postgres")
        subprocess.run(as_server_user([os.path.join(PG_BIN, "initdb"), "-D", self.data, "-U", "postgres",
                                       "-E", "UTF8", "--locale=C.UTF-8", "--auth-local=trust",
                                       "--auth-host=scram-sha-256"]),
                       check=True, stdout=subprocess.DEVNULL)
        # Durability stays at the defaults (fsync, synchronous_commit, full_page_writes on).
        with open(os.path.join(self.data, "postgresql.auto.conf"), "a", encoding="utf-8") as fh:
            fh.write(f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                     f"unix_socket_directories = '{self.socket_dir}'\n"
                     f"max_connections = {self.max_connections}\n")
        subprocess.run(as_server_user([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-l", self.log,
                                       "-w", "-t", "60", "start"]), check=True, stdout=subprocess.DEVNULL)

    def stop(self) -> None:
        subprocess.run(as_server_user([os.path.join(PG_BIN, "pg_ctl"), "-D", self.data, "-m", "fast", "-w", "stop"]),
                       check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(self.base, ignore_errors=True)

    def connect(self, dbname: str = "postgres"):
        conn = psycopg2.connect(host=self.socket_dir, port=self.port, user="postgres", dbname=dbname)
        conn.autocommit = True
        return conn

    def query(self, text: str, params: tuple = ()) -> list[tuple]:
        with contextlib.closing(self.connect()) as conn, conn.cursor() as cur:
            cur.execute(text, params or None)
            return cur.fetchall() if cur.description else []

    def checkpoint(self) -> None:
        self.query("CHECKPOINT")

    def version(self) -> str:
        return self.query("SHOW server_version")[0][0]


def tenant_names(n: int) -> list[str]:
    width = max(4, len(str(n)))
    return [f"{PREFIX}{i:0{width}d}" for i in range(1, n + 1)]


def write_vars(workdir: str, server: PgServer, names: list[str]) -> None:
    bench_vars = {
        "bench_socket": server.socket_dir,
        "bench_port": server.port,
        "bench_seed": SEED,
        "bench_plans": {"starter": PLAN},
        "bench_groups": {GROUP: {"app_role": APP_ROLE}},
        "bench_tenants": [{"name": n, "plan": "starter", "group": GROUP} for n in names],
        # The loop side gets the very passwords the module derives, so both compare SCRAM verifiers.
        "bench_app_role": APP_ROLE,
        "bench_app_password": derive_password(SEED, "app", GROUP),
        "bench_loop": [{"name": n, "report_password": derive_password(SEED, "report", n)} for n in names],
    }
    with open(os.path.join(workdir, "vars.json"), "w", encoding="utf-8") as fh:
        json.dump(bench_vars, fh)
    for name, text in (("ours.yml", OURS_PLAYBOOK), ("loop.yml", LOOP_PLAYBOOK), ("warmup.yml", WARMUP_PLAYBOOK)):
        with open(os.path.join(workdir, name), "w", encoding="utf-8") as fh:
            fh.write(text)


def ansible_env(workdir: str) -> dict[str, str]:
    cfg = os.path.join(workdir, "ansible.cfg")
    with open(cfg, "w", encoding="utf-8") as fh:
        fh.write(ANSIBLE_CFG.format(python=sys.executable))
    bin_dir = os.path.dirname(sys.executable)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        ANSIBLE_CONFIG=cfg,
        # The collection under test first, then the defaults (community.postgresql comes
        # from the ansible package's site-packages, which is scanned anyway).
        ANSIBLE_COLLECTIONS_PATH=os.pathsep.join(
            [COLLECTIONS, os.path.expanduser("~/.ansible/collections"), "/usr/share/ansible/collections"]),
        ANSIBLE_LOCAL_TEMP=os.path.join(workdir, "tmp"),
        ANSIBLE_HOME=os.path.join(workdir, "home"),
        PATH=bin_dir + os.pathsep + env.get("PATH", ""),
    )
    return env


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def playbook(workdir: str, env: dict[str, str], name: str) -> tuple[float, dict]:
    """Run one playbook; returns (wall-clock seconds, summary of the json callback's output).

    The summary also has the CPU seconds of ansible-playbook and every module process it ran
    (not the server's) and the load average when it ended, to judge a busy machine.
    """
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,", name]
    cpu0 = children_cpu()
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, check=False)
    took = time.monotonic() - t0
    cpu = children_cpu() - cpu0
    load = os.getloadavg()[0]
    with open(os.path.join(workdir, f"{name}.{int(time.time() * 1000)}.log"), "w", encoding="utf-8") as fh:
        fh.write(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    try:
        out = json.loads(proc.stdout[proc.stdout.index("{"):])
    except ValueError:
        out = None
    if proc.returncode != 0 or out is None:
        sys.stdout.write("\n".join(failures(out)) if out else proc.stdout[-4000:])
        sys.stdout.write("\n" + proc.stderr[-3000:])
        raise SystemExit(f"ansible-playbook {name} failed (rc={proc.returncode})")
    summary = summarize(out)
    summary.update(ansible_cpu_s=round(cpu, 1), load_after=round(load, 1))
    return took, summary


def failures(out: dict) -> list[str]:
    """The messages of the failed tasks (and loop items) in the json callback's output."""
    msgs = []
    for play in out.get("plays", []):
        for task in play["tasks"]:
            res = task["hosts"].get("localhost", {})
            for r in res.get("results", [res]):
                if r.get("failed"):
                    msgs.append(f"{task['task']['name']}: {r.get('msg', r)}")
    return msgs


def summarize(out: dict) -> dict:
    """Changed tasks (the recap) and changed loop items, plus the tenant module's own report."""
    stats = out["stats"]["localhost"]
    summary = {"changed_tasks": stats["changed"], "failed": stats["failures"], "items": 0, "changed_items": 0}
    for play in out["plays"]:
        for task in play["tasks"]:
            res = task["hosts"]["localhost"]
            items = res.get("results")
            if items is not None:
                summary["items"] += len(items)
                summary["changed_items"] += sum(1 for r in items if r.get("changed"))
            if "statements" in res:
                summary["module_changed"] = res["changed"]
                summary["statements"] = len(res["statements"])
                summary["created"] = len(res["created"])
                summary["unchanged"] = sum(1 for a in res["tenants"].values() if a == "unchanged")
    return summary


def verify(server: PgServer, names: list[str]) -> None:
    """Every tenant's database (owned by the group role, UTF8, limit) and reporting role exists."""
    dbs = server.query(
        "SELECT count(*) FROM pg_database WHERE datname LIKE %s AND pg_get_userbyid(datdba) = %s"
        " AND pg_encoding_to_char(encoding) = 'UTF8' AND datconnlimit = %s",
        (PREFIX + "%", APP_ROLE, PLAN["connection_limit"]))[0][0]
    roles = server.query(
        "SELECT count(*) FROM pg_roles WHERE rolname LIKE %s AND rolcanlogin AND NOT rolinherit"
        " AND rolconnlimit = %s", (PREFIX + "%\\_report", PLAN["reporting_connection_limit"]))[0][0]
    if dbs != len(names) or roles != len(names):
        raise SystemExit(f"expected {len(names)} databases and reporting roles, found {dbs} and {roles}")


def reset(server: PgServer) -> None:
    """Drop every database and role a side made, and restore the default CONNECT grants."""
    with contextlib.closing(server.connect()) as conn, conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (PREFIX + "%",))
        for (name,) in cur.fetchall():
            cur.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        cur.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE %s OR rolname = %s",
                    (PREFIX + "%\\_report", APP_ROLE))
        for (name,) in cur.fetchall():
            cur.execute(f'DROP OWNED BY "{name}"')
            cur.execute(f'DROP ROLE "{name}"')
        cur.execute("GRANT CONNECT, TEMPORARY ON DATABASE postgres, template1 TO PUBLIC")
    server.checkpoint()


def run_side(label: str, book: str, server: PgServer, workdir: str, env: dict[str, str],
             names: list[str], reruns: int) -> dict:
    """First run, then ``reruns`` idempotent re-runs (each must change nothing); the median is kept."""
    server.checkpoint()
    log(f"{label}: first run ({len(names)} tenants)")
    first, first_summary = playbook(workdir, env, book)
    verify(server, names)
    log(f"{label}: first run {first:.1f} s {first_summary}")
    runs = []
    for i in range(1, reruns + 1):
        server.checkpoint()
        log(f"{label}: idempotent re-run {i}/{reruns}")
        took, summary = playbook(workdir, env, book)
        log(f"{label}: re-run {took:.1f} s {summary}")
        if summary["changed_tasks"] or summary["changed_items"] or summary.get("module_changed"):
            raise SystemExit(f"{label}: the re-run changed something: {summary}")
        runs.append((took, summary))
    runs.sort(key=lambda r: r[0])
    rerun, rerun_summary = runs[len(runs) // 2]
    return {"first_s": round(first, 2), "rerun_s": round(rerun, 2), "reruns_s": [round(r[0], 2) for r in runs],
            "first": first_summary, "rerun": rerun_summary}


def ansible_version(env: dict[str, str]) -> str:
    out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible"), "--version"],
                         env=env, stdout=subprocess.PIPE, text=True, check=True).stdout
    return out.splitlines()[0].strip()


MODULE_FILES = [
    os.path.join(COLLECTIONS, "ansible_collections", "dine360", "saas", "plugins", *parts)
    for parts in (("modules", "tenants.py"), ("module_utils", "tenants.py"), ("module_utils", "postgres.py"))
]


def module_revision() -> str:
    """The last commit of the module's files, and whether they differ from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", ROOT, *args], capture_output=True, text=True, check=False).stdout.strip()

    commit = git("log", "-1", "--format=%h", "--", *MODULE_FILES) or "unknown"
    dirty = git("status", "--porcelain", "--", *MODULE_FILES)
    return commit + (" with uncommitted changes" if dirty else "")


def collection_version(name: str, env: dict[str, str]) -> str:
    out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-galaxy"), "collection", "list",
                          name, "--format", "json"], env=env, capture_output=True, text=True, check=False).stdout
    try:
        return next(iter(v[name]["version"] for v in json.loads(out).values() if name in v))
    except (ValueError, StopIteration, KeyError, TypeError):
        return "unknown"


def render(res: dict) -> str:
    n, ours, loop, ratio = res["tenants"], res["ours"], res["loop"], res["ratio"]
    per_item = loop["rerun_s"] / (2 * n + 1)

    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    setup = (
        f"Measured {res['measured']} UTC on {res['machine']} (load average {res['load_before']:.1f} at the"
        f" start); PostgreSQL {res['postgresql']} started by the script in a temporary directory (Unix"
        f" socket, default durability: fsync and synchronous_commit on; max_connections"
        f" {res['max_connections']}); {res['ansible']}, community.postgresql"
        f" {res['community_postgresql']}. Wall clock around each `ansible-playbook` run against"
        " localhost (connection local, pipelining on, an otherwise empty ansible.cfg), so Ansible's"
        " start-up counts on both sides. Both sides run on the same server; everything the first"
        " side made is dropped (and a CHECKPOINT taken) before the loop runs."
    )
    ours_text = (
        "* **Ours**: one `dine360.saas.tenants` task (module files at commit"
        f" {res['module_revision']}) with the whole list (plan `starter`, group `core`,"
        f" app role `{APP_ROLE}`, no PgBouncer auth user). First run: {ours['first'].get('created', 0)}"
        f" tenants created with {ours['first'].get('statements', 0)} statements; re-run: changed=false,"
        f" {ours['rerun'].get('unchanged', 0)} tenants unchanged, no statement run."
    )
    loop_text = (
        "* **Loop**: one `community.postgresql.postgresql_user` task for the app role, a loop of"
        f" `postgresql_user` over the {n} reporting roles (password, role flags, connection limit,"
        " `default_transaction_read_only`) and a loop of `postgresql_db` over the"
        f" {n} databases (owner, template0, UTF8, connection limit): {2 * n + 1} module runs per pass."
        f" First run: {loop['first']['changed_items']} of {loop['first']['items']} items changed;"
        f" re-run: changed=0 ({loop['rerun']['changed_items']} items changed), about {per_item:.2f} s"
        " per module run."
    )
    def reruns(side: dict) -> str:
        if len(side["reruns_s"]) == 1:
            return "one re-run"
        return f"median of {len(side['reruns_s'])} re-runs: " + ", ".join(f"{t:.1f}" for t in side["reruns_s"])

    def row(label: str, side: dict) -> str:
        return (f"| {label} | {side['first_s']:.1f} | {side['rerun_s']:.1f} |"
                f" {side['first']['ansible_cpu_s']:.1f} / {side['rerun']['ansible_cpu_s']:.1f} |"
                f" {side['first']['load_after']:.1f} / {side['rerun']['load_after']:.1f} |")

    table = [
        ("| Side | First run (s) | Idempotent re-run (s) | Ansible CPU, first / re-run (s)"
         " | Load after, first / re-run |"),
        "|---|---:|---:|---:|---:|",
        row("`dine360.saas.tenants`, one task", ours),
        row("`postgresql_user` + `postgresql_db` loops", loop),
        f"| Ratio loop / ours | {ratio['first']:.1f}x | {ratio['rerun']:.1f}x | | |",
        "",
        (f"Re-run times: ours {reruns(ours)}; the loop {reruns(loop)}. Ansible CPU is that of"
         " ansible-playbook and the module processes (not the server's); the load is the 1-minute"
         " load average when the run ended (other jobs on the machine show there)."),
    ]
    targets = [
        "| Target | Measured | Verdict |",
        "| --- | --- | --- |",
        (f"| Idempotent re-run of {n} tenants under {RERUN_TARGET_S:.0f} s | {ours['rerun_s']:.1f} s"
         f" | {verdict(ours['rerun_s'] < RERUN_TARGET_S)} |"),
        (f"| At least {RATIO_TARGET:.0f}x faster than the loop, re-run | {ratio['rerun']:.1f}x"
         f" | {verdict(ratio['rerun'] >= RATIO_TARGET)} |"),
        (f"| At least {RATIO_TARGET:.0f}x faster than the loop, first run | {ratio['first']:.1f}x"
         f" | {verdict(ratio['first'] >= RATIO_TARGET)} |"),
    ]
    caveats = (
        "The sides do not do the same work, and the difference favours the loop: per tenant the"
        " module also revokes `CONNECT` and `TEMPORARY` from PUBLIC and grants `CONNECT` to the"
        " reporting role, sets the plan's `statement_timeout` on the database, and connects to the"
        " new database to grant the reporting role read access (schema usage, tables, sequences,"
        " default privileges) and to write its setup marker; once per run it also restricts"
        " `CONNECT` on `postgres` and `template1`. A loop doing all of that would need"
        " `postgresql_privs`, `postgresql_query` or similar tasks per tenant on top of the two"
        " measured here. Both first runs include the same server work, one `CREATE DATABASE` from"
        " template0 per tenant (WAL-logged and fsynced), which is most of ours, so the first-run"
        " ratio is bounded by that shared cost; the issue's 20x target is read as the re-run's (the"
        " first run is listed for reference). The re-run shows the per-item cost of the loop (a"
        " Python module start-up and a new connection per item) against one module run that reads"
        " the cluster with a handful of catalog queries."
    )
    return "\n".join([
        START,
        f"## Tenant reconcile: {n} tenants (bench/tenants_reconcile.py)",
        "",
        setup,
        "",
        "```sh",
        f".venv/bin/python bench/tenants_reconcile.py --tenants {n} --markdown docs/BENCHMARKS.md",
        "```",
        "",
        ours_text,
        loop_text,
        "",
        *table,
        "",
        *targets,
        "",
        caveats,
        END,
    ]) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tenants", type=int, default=500, help="number of tenants (default 500)")
    ap.add_argument("--output", help="write the results as JSON to this file")
    ap.add_argument("--markdown", help="markdown file whose tenants_reconcile section is rewritten")
    ap.add_argument("--max-connections", type=int, default=100,
                    help="server max_connections (default 100, PostgreSQL's own default)")
    ap.add_argument("--reruns", type=int, default=3,
                    help="idempotent re-runs of the module, the median is reported (default 3)")
    ap.add_argument("--loop-reruns", type=int, default=1,
                    help="idempotent re-runs of the loop, the median is reported (default 1: each takes minutes)")
    ap.add_argument("--keep", action="store_true", help="leave the server and its directory for debugging")
    args = ap.parse_args(argv)
    if args.tenants < 1 or args.reruns < 1 or args.loop_reruns < 1:
        ap.error("--tenants, --reruns and --loop-reruns must be at least 1")
    names = tenant_names(args.tenants)
    max_connections = args.max_connections
    server = PgServer(max_connections)
    workdir = tempfile.mkdtemp(prefix="d360-bench-ansible-")
    load_before = os.getloadavg()[0]
    revision = module_revision()
    log(f"PostgreSQL in {server.base}, Ansible files in {workdir}; load average {load_before:.1f}")
    server.start()
    try:
        write_vars(workdir, server, names)
        env = ansible_env(workdir)
        log("warm-up (not timed)")
        playbook(workdir, env, "warmup.yml")
        ours = run_side("ours", "ours.yml", server, workdir, env, names, args.reruns)
        log("dropping everything before the loop side")
        reset(server)
        loop = run_side("loop", "loop.yml", server, workdir, env, names, args.loop_reruns)
        res = {
            "tenants": args.tenants,
            "measured": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M"),
            "machine": machine(),
            "postgresql": server.version(),
            "max_connections": max_connections,
            "ansible": ansible_version(env),
            "community_postgresql": collection_version("community.postgresql", env),
            "module_revision": revision,
            "load_before": load_before,
            "ours": ours,
            "loop": loop,
            "ratio": {"first": round(loop["first_s"] / ours["first_s"], 1),
                      "rerun": round(loop["rerun_s"] / ours["rerun_s"], 1)},
        }
        res["targets"] = {"rerun_under_10s": ours["rerun_s"] < RERUN_TARGET_S,
                          "rerun_ratio_at_least_20x": res["ratio"]["rerun"] >= RATIO_TARGET}
        if not args.keep:
            reset(server)
    finally:
        if args.keep:
            stop = as_server_user([os.path.join(PG_BIN, "pg_ctl"), "-D", server.data, "stop"])
            log(f"kept {workdir}; stop the server with: {' '.join(stop)}")
        else:
            server.stop()
            shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(f"{'Side (' + str(args.tenants) + ' tenants)':<44} {'first run (s)':>14} {'re-run (s)':>11}")
    print(f"{'dine360.saas.tenants (one task)':<44} {ours['first_s']:>14.1f} {ours['rerun_s']:>11.1f}")
    print(f"{'postgresql_user + postgresql_db loops':<44} {loop['first_s']:>14.1f} {loop['rerun_s']:>11.1f}")
    print(f"{'ratio loop / ours':<44} {res['ratio']['first']:>13.1f}x {res['ratio']['rerun']:>10.1f}x")
    print(f"targets: re-run < {RERUN_TARGET_S:.0f} s: {res['targets']['rerun_under_10s']}; "
          f">= {RATIO_TARGET:.0f}x on the re-run: {res['targets']['rerun_ratio_at_least_20x']}")
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            json.dump(res, fh, indent=2)
            fh.write("\n")
    if args.markdown:
        write_section(args.markdown, render(res), START, END)
    return 0 if all(res["targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
