#!/usr/bin/env python3
"""dine360-backup's WAL archiving and restore, against pgBackRest on the same machine and WAL.

    .venv/bin/python bench/backup_bench.py [--runs 3] [--scale 20] [--segments 80]
        [--output .artifacts/backup_bench.json] [--markdown docs/BENCHMARKS.md] [--keep]

Run it as root (PostgreSQL and both tools then run as the ``postgres`` user) on a
machine with Debian's PostgreSQL 15 server binaries and pgBackRest (scripts/setup.sh
installs both). Everything lives in one temporary directory; PostgreSQL listens on a
Unix socket only. One run takes about ten minutes with the defaults.

1. WAL and backups, made once. A throw-away PostgreSQL 15 (wal_level replica,
   max_wal_size 8GB, archive_mode on) whose archive_command copies each completed
   file into a fixed directory (the WAL set) and pushes it to three restore
   repositories: dine360-backup (zstd level 1, its default), pgBackRest with its
   default compression (gz, level 6) and pgBackRest with zst level 1.
   ``pgbench -i -s SCALE``, then, with the cluster idle, a full base backup with each
   tool (``pgbackrest backup --type=full --start-fast``, ``dine360-backup base-backup
   --force``), back to back, so all three hold the same database state. Then pgbench
   TPC-B-like transactions until about SEGMENTS segments of WAL have been written
   since the backups, a WAL switch, and the cluster stops once everything is archived.
2. Archive-push rate to a path. Each configuration pushes every 16 MiB segment of the
   WAL set into a fresh repository on the same disk, one process per segment, in
   order, the way PostgreSQL's archive_command calls it (process-max=1,
   archive-async=n for pgBackRest; both tools sync each file before returning).
   Rate = segments / wall time of the whole sequence; stored bytes = the repository's
   WAL files.
3. Restore. For each tool: restore the base backup into an empty directory, start
   PostgreSQL on it (archive_mode off, same settings for both), let it replay the
   archive to its end through the tool's restore_command (one process per segment:
   ``dine360-backup wal-get``, ``pgbackrest archive-get``, no asynchronous prefetch)
   and promote; the clock stops when ``pg_is_in_recovery()`` is false. The restored
   pgbench_history row count must equal the source's.

Configurations run interleaved within each repetition (--runs, min and median kept).
--output writes the raw results as JSON; --markdown rewrites this benchmark's section
(between ``<!-- backup_bench:start -->`` and ``<!-- backup_bench:end -->``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLL = os.path.join(ROOT, "collections", "ansible_collections", "dine360", "saas")
CLI_SRC = os.path.join(COLL, "roles", "backup", "files", "dine360_backup.py")
STORE_SRC = os.path.join(COLL, "plugins", "module_utils", "backup_store.py")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ha_failover import log, machine, write_section  # noqa: E402  (shared by the bench scripts)

START = "<!-- backup_bench:start -->"
END = "<!-- backup_bench:end -->"
PG_BIN = os.environ.get("D360_PG_BIN", "/usr/lib/postgresql/15/bin")
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's python3-zstandard / python3-lz4, as on a node
PGBACKREST = shutil.which("pgbackrest") or "/usr/bin/pgbackrest"
SEG = 16 * 1024 * 1024

# (key, label, tool, settings)
PUSH_CONFIGS = [
    ("ours_zstd1", "dine360-backup, zstd level 1 (default)", "ours", {"compression": "zstd", "compression_level": 1}),
    ("ours_lz4", "dine360-backup, lz4", "ours", {"compression": "lz4"}),
    ("pgb_gz6", "pgBackRest, gz level 6 (default)", "pgb", {"stanza": "push-gz"}),
    ("pgb_zst1", "pgBackRest, zst level 1", "pgb", {"stanza": "push-zst"}),
]
RESTORE_CONFIGS = [
    ("ours_zstd1", "dine360-backup (zstd 1 WAL, zstd 3 base backup)", "ours", {}),
    ("pgb_gz6", "pgBackRest, gz level 6 (default)", "pgb", {"stanza": "bench-gz"}),
    ("pgb_zst1", "pgBackRest, zst level 1", "pgb", {"stanza": "bench-zst"}),
]


def as_pg() -> dict:
    """subprocess keyword arguments that run the child as the postgres user (no extra process)."""
    if os.geteuid() == 0:
        return {"user": "postgres", "group": "postgres", "extra_groups": []}
    return {}


def run(argv: list[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False,
                         **as_pg(), **kw)
    if check and res.returncode != 0:
        raise SystemExit(f"failed ({res.returncode}): {' '.join(argv)}\n{res.stdout}\n{res.stderr}")
    return res


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def tree_bytes(path: str, only=None) -> tuple[int, int]:
    """(total bytes, files) under path; ``only`` filters file names."""
    total = files = 0
    for dirpath, _, names in os.walk(path):
        for n in names:
            if only is None or only(n):
                total += os.path.getsize(os.path.join(dirpath, n))
                files += 1
    return total, files


def is_segment(name: str) -> bool:
    return len(name) == 24 and all(c in "0123456789ABCDEF" for c in name)


def is_stored_segment(name: str) -> bool:
    """A stored WAL segment in either repository (pgBackRest appends -sha1 and an extension)."""
    return len(name) >= 24 and is_segment(name[:24]) and (len(name) == 24 or name[24] == "-")


class Bench:
    def __init__(self, args) -> None:
        self.args = args
        self.base = tempfile.mkdtemp(prefix="d360-bench-backup-")
        os.chmod(self.base, 0o755)
        self.data = self.p("data")
        self.sock = self.p("sock")
        self.walset = self.p("walset")
        self.port = 5432  # Unix socket only, in our own directory: no clash with other servers
        self.pgb_conf = self.p("pgbackrest.conf")
        self.ours_dir = self.p("ours")
        self.cli = os.path.join(self.ours_dir, "dine360_backup.py")
        for d in (self.sock, self.walset, self.ours_dir, self.p("lock"), self.p("spool"), self.p("log"),
                  self.p("repo-ours"), self.p("repo-pgb"), self.p("push-template"), self.p("staging")):
            os.makedirs(d)
        shutil.copy(CLI_SRC, self.cli)
        shutil.copy(STORE_SRC, os.path.join(self.ours_dir, "dine360_backup_store.py"))
        if os.geteuid() == 0:
            for dirpath, dirnames, filenames in os.walk(self.base):
                for n in dirnames + filenames:
                    shutil.chown(os.path.join(dirpath, n), "postgres", "postgres")
            shutil.chown(self.base, "postgres", "postgres")

    def p(self, *parts: str) -> str:
        return os.path.join(self.base, *parts)

    # --- configuration ------------------------------------------------------------

    def ours_config(self, name: str, repo: str, **extra) -> str:
        cfg = {"cluster": "bench", "targets": [{"type": "path", "path": repo}], "compression": "zstd",
               "compression_level": 1, "pg_bin": PG_BIN, "data_dir": self.data, "pg_port": self.port,
               "socket_dir": self.sock, "patroni_url": "", "superuser": "postgres", "node": "bench1",
               "staging_dir": self.p("staging"), "textfile_dir": "", "wal_wait_seconds": 120,
               "retention_count": 10}
        cfg.update(extra)
        path = self.p(name)
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(cfg, fh, indent=1)
        os.chmod(path, 0o644)
        return path

    def write_pgb_conf(self) -> None:
        common = (f"pg1-path={self.data}\npg1-socket-path={self.sock}\npg1-port={self.port}\n")
        text = (f"[global]\nrepo1-path={self.p('repo-pgb')}\nprocess-max=1\narchive-async=n\nstart-fast=y\n"
                f"lock-path={self.p('lock')}\nspool-path={self.p('spool')}\nlog-path={self.p('log')}\n"
                "log-level-console=warn\nlog-level-stderr=warn\nlog-level-file=off\nrepo1-retention-full=10\n\n"
                f"[bench-gz]\n{common}compress-type=gz\n\n"
                f"[bench-zst]\n{common}compress-type=zst\ncompress-level=1\n\n"
                f"[push-gz]\n{common}compress-type=gz\n\n"
                f"[push-zst]\n{common}compress-type=zst\ncompress-level=1\n")
        with open(self.pgb_conf, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(self.pgb_conf, 0o644)

    def pgb(self, stanza: str, *args: str, repo: str | None = None) -> list[str]:
        argv = [PGBACKREST, f"--config={self.pgb_conf}", f"--stanza={stanza}"]
        if repo:
            argv.append(f"--repo1-path={repo}")
        return argv + list(args)

    def ours(self, config: str, *args: str) -> list[str]:
        return [SYSTEM_PYTHON, self.cli, "--config", config, *args]

    # --- the source cluster ------------------------------------------------------

    def psql(self, sql: str, db: str = "postgres", sock: str | None = None) -> str:
        return run([os.path.join(PG_BIN, "psql"), "-h", sock or self.sock, "-p", str(self.port), "-U", "postgres",
                    "-d", db, "-XAtc", sql]).stdout.strip()

    def generate(self) -> dict:
        a = self.args
        run([os.path.join(PG_BIN, "initdb"), "-D", self.data, "-U", "postgres", "-E", "UTF8", "--locale=C.UTF-8",
             "--auth-local=trust", "--auth-host=reject"])
        self.ours_restore_cfg = self.ours_config("ours-restore.json", self.p("repo-ours"))
        # Inline (pgBackRest's backup insists that archive_command mentions pgbackrest).
        archive_command = " && ".join([
            f'cp %p {self.walset}/.tmp.%f', f'mv -f {self.walset}/.tmp.%f {self.walset}/%f',
            " ".join(self.ours(self.ours_restore_cfg, "wal-push", "%p", "%f")),
            " ".join(self.pgb("bench-gz", "archive-push", "%p")),
            " ".join(self.pgb("bench-zst", "archive-push", "%p"))])
        with open(os.path.join(self.data, "postgresql.conf"), "a", encoding="utf-8") as fh:
            fh.write(f"\n# backup_bench\nlisten_addresses = ''\nport = {self.port}\n"
                     f"unix_socket_directories = '{self.sock}'\nwal_level = replica\nmax_wal_size = 8GB\n"
                     "min_wal_size = 1GB\nshared_buffers = 256MB\narchive_mode = on\n"
                     f"archive_command = '{archive_command}'\nsynchronous_commit = off\n")
        self.write_pgb_conf()
        self.pg_ctl(self.data, "start", "-l", self.p("source.log"))
        for stanza in ("bench-gz", "bench-zst"):
            run(self.pgb(stanza, "stanza-create"))
        for stanza in ("push-gz", "push-zst"):
            run(self.pgb(stanza, "stanza-create", repo=self.p("push-template")))
        log(f"pgbench -i -s {a.scale}")
        run([os.path.join(PG_BIN, "pgbench"), "-h", self.sock, "-p", str(self.port), "-U", "postgres", "-i",
             "-s", str(a.scale), "-q", "postgres"])
        self.psql("CHECKPOINT")
        log("base backups: pgBackRest (gz), pgBackRest (zst), dine360-backup")
        backups = {}
        for stanza in ("bench-gz", "bench-zst"):
            t0 = time.monotonic()
            run(self.pgb(stanza, "backup", "--type=full"))
            backups[stanza] = {"seconds": round(time.monotonic() - t0, 1)}
        # Standalone (no Patroni) dine360-backup does not switch WAL itself: do it while it waits.
        stop = threading.Event()

        def switcher():
            while not stop.wait(1.0):
                with contextlib.suppress(SystemExit):
                    self.psql("SELECT pg_switch_wal()")
        th = threading.Thread(target=switcher, daemon=True)
        t0 = time.monotonic()
        th.start()
        try:
            out = run(self.ours(self.ours_restore_cfg, "base-backup", "--force", "--no-expire")).stdout
        finally:
            stop.set()
            th.join()
        backups["ours"] = {"seconds": round(time.monotonic() - t0, 1), "result": json.loads(out.strip().splitlines()[-1])}
        info = json.loads(run(self.pgb("bench-gz", "info", "--output=json")).stdout)
        backups["bench-gz"]["size"] = info[0]["backup"][-1]["info"]["repository"]["delta"]
        info = json.loads(run(self.pgb("bench-zst", "info", "--output=json")).stdout)
        backups["bench-zst"]["size"] = info[0]["backup"][-1]["info"]["repository"]["delta"]
        backups["database_bytes"] = info[0]["backup"][-1]["info"]["size"]
        start_lsn = self.psql("SELECT pg_current_wal_lsn()")
        target = a.segments * SEG
        log(f"pgbench transactions until {a.segments} segments of WAL")
        tx = 0
        while int(self.psql(f"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{start_lsn}')::bigint")) < target:
            out = run([os.path.join(PG_BIN, "pgbench"), "-h", self.sock, "-p", str(self.port), "-U", "postgres",
                       "-n", "-c", "4", "-j", "2", "-T", "5", "postgres"]).stdout
            self.psql("CHECKPOINT")  # as a busy server's checkpoints: full-page images again
            tx += int(next(line for line in out.splitlines() if "transactions actually processed" in line)
                      .split(":")[1].split("/")[0])
        history = int(self.psql("SELECT count(*) FROM pgbench_history"))
        last = self.psql("SELECT pg_walfile_name(pg_switch_wal())")
        log(f"waiting for the archiver up to {last}")
        deadline = time.monotonic() + 900
        while self.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") < last:
            if time.monotonic() > deadline:
                raise SystemExit("the archiver did not catch up: see " + self.p("source.log"))
            time.sleep(0.5)
        failed = int(self.psql("SELECT failed_count FROM pg_stat_archiver"))
        version = self.psql("SHOW server_version")
        self.pg_ctl(self.data, "stop", "-m", "fast")
        segs = sorted(n for n in os.listdir(self.walset) if is_segment(n))
        self.segments = segs
        return {"scale": a.scale, "transactions": tx, "pgbench_history_rows": history, "last_wal": last,
                "archive_failures": failed, "segments_in_set": len(segs), "first_wal": segs[0],
                "wal_after_backups_bytes": target, "backups": backups, "postgresql": version}

    def pg_ctl(self, data: str, *args: str) -> None:
        run([os.path.join(PG_BIN, "pg_ctl"), "-D", data, "-w", "-t", "3600", *args])

    # --- 2. archive-push rate ----------------------------------------------------

    def push_once(self, key: str, tool: str, settings: dict, rep: int) -> dict:
        repo = self.p(f"push-{key}-{rep}")
        if tool == "ours":
            os.makedirs(repo)
            if os.geteuid() == 0:
                shutil.chown(repo, "postgres", "postgres")
            cfg = self.ours_config(f"push-{key}.json", repo, **settings)
            argv_for = lambda name: self.ours(cfg, "wal-push", os.path.join(self.walset, name), name)  # noqa: E731
        else:
            shutil.copytree(self.p("push-template"), repo, symlinks=True)
            if os.geteuid() == 0:
                subprocess.run(["chown", "-R", "postgres:postgres", repo], check=True)
            argv_for = lambda name: self.pgb(settings["stanza"], "archive-push",  # noqa: E731
                                             os.path.join(self.walset, name), repo=repo)
        subprocess.run(["sync"], check=True)
        cpu0 = children_cpu()
        t0 = time.monotonic()
        for name in self.segments:
            run(argv_for(name))
        wall = time.monotonic() - t0
        cpu = children_cpu() - cpu0
        stored, files = tree_bytes(repo, is_stored_segment)
        if files != len(self.segments):
            raise SystemExit(f"{key}: {files} segments stored in {repo}, expected {len(self.segments)}")
        shutil.rmtree(repo)
        return {"seconds": round(wall, 2), "segments_per_s": round(len(self.segments) / wall, 2),
                "cpu_seconds": round(cpu, 2), "stored_bytes": stored}

    # --- 3. restore ------------------------------------------------------------------

    def restore_once(self, key: str, tool: str, settings: dict, rep: int, expected_rows: int) -> dict:
        target = self.p(f"restore-{key}-{rep}")
        data = os.path.join(target, "data")
        sock = os.path.join(target, "sock")
        os.makedirs(sock)
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", "postgres:postgres", target], check=True)
        subprocess.run(["sync"], check=True)
        t0 = time.monotonic()
        if tool == "ours":
            run(self.ours(self.ours_restore_cfg, "restore", "--data-dir", data, "--recovery-conf"))
        else:
            os.makedirs(data, mode=0o700)
            if os.geteuid() == 0:
                shutil.chown(data, "postgres", "postgres")
            run(self.pgb(settings["stanza"], "restore", f"--pg1-path={data}"))
        t_restored = time.monotonic()
        opts = (f"-c port={self.port} -c listen_addresses='' -c unix_socket_directories={sock} -c archive_mode=off "
                "-c hot_standby=on -c shared_buffers=256MB")
        logf = os.path.join(target, "postgres.log")
        self.pg_ctl(data, "start", "-o", opts, "-l", logf)
        while self.psql("SELECT pg_is_in_recovery()", sock=sock) != "f":
            time.sleep(0.2)
        t_done = time.monotonic()
        rows = int(self.psql("SELECT count(*) FROM pgbench_history", sock=sock))
        self.pg_ctl(data, "stop", "-m", "fast")
        replayed, last = 0, ""
        with open(logf, errors="replace") as fh:
            for line in fh:
                if "restored log file" in line:
                    name = line.split('"')[1]
                    if is_segment(name):
                        replayed += 1
                        last = name
        if rows != expected_rows:
            raise SystemExit(f"{key}: restored pgbench_history has {rows} rows, the source had {expected_rows}")
        shutil.rmtree(target)
        return {"seconds": round(t_done - t0, 2), "restore_s": round(t_restored - t0, 2),
                "replay_s": round(t_done - t_restored, 2), "segments_replayed": replayed, "last_replayed": last}

    def stop_all(self) -> None:
        for dirpath in [self.data] + [os.path.join(self.base, d, "data") for d in os.listdir(self.base)
                                      if d.startswith("restore-")]:
            if os.path.exists(os.path.join(dirpath, "postmaster.pid")):
                subprocess.run([os.path.join(PG_BIN, "pg_ctl"), "-D", dirpath, "-m", "immediate", "stop"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, **as_pg())


def summary(values: list[float]) -> dict:
    return {"min": min(values), "median": round(statistics.median(values), 2), "max": max(values)}


def render(res: dict) -> str:
    g = res["generated"]
    push = res["push"]
    rest = res["restore"]
    n = g["segments_in_set"]
    mib = lambda b: f"{b / 1024 / 1024:,.0f}"  # noqa: E731
    lines = [
        START,
        "## WAL archiving and restore against pgBackRest (bench/backup_bench.py)",
        "",
        f"Measured {res['measured']} UTC on {res['machine']}; PostgreSQL {g['postgresql']}, "
        f"{res['pgbackrest']}, dine360-backup at {res['revision']} under Python {res['python']} "
        f"(python3-zstandard {res['zstandard']}, python3-lz4 {res['lz4']}). {res['runs']} run(s) of each "
        "configuration, interleaved; min and median. Repositories, the WAL set and the restored "
        "data directories are on the same disk (warm page cache: the WAL set is read from memory). "
        f"The machine was shared with other work: 1-minute load average {res['load_before']:.1f} at the start, "
        f"{res['load_during']['min']:.1f}–{res['load_during']['max']:.1f} (median {res['load_during']['median']:.1f}) "
        "after each measurement, so the CPU columns (user + system time of the tool's processes) are the "
        "steadier comparison.",
        "",
        f"The WAL: `pgbench -i -s {g['scale']}`, base backups, then {g['transactions']:,} pgbench TPC-B-like "
        f"transactions (4 clients); {n} segments of 16 MiB ({g['first_wal']} ... {g['last_wal']}), "
        "pushed by every configuration from the same directory.",
        "",
        "### archive-push to a path: one process per segment, sequential (as archive_command)",
        "",
        "| Configuration | Segments/s (median) | min–max | Wall s (median) | CPU ms/segment (median) | Stored MiB | Rate ratio vs. pgBackRest |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    peer = {"ours_zstd1": "pgb_zst1", "ours_lz4": "pgb_zst1"}
    for key, label, _tool, _s in PUSH_CONFIGS:
        r = push[key]
        rate = r["segments_per_s"]
        ratio = ""
        if key in peer:
            ratio = (f"{rate['median'] / push[peer[key]]['segments_per_s']['median']:.2f}x zst-1, "
                     f"{rate['median'] / push['pgb_gz6']['segments_per_s']['median']:.2f}x gz-6")
        lines.append(f"| {label} | {rate['median']:.2f} | {rate['min']:.2f}–{rate['max']:.2f} | "
                     f"{r['seconds']['median']:.1f} | {r['cpu_seconds']['median'] * 1000 / n:.0f} | {mib(r['stored_bytes'])} "
                     f"({r['stored_bytes'] / (n * SEG):.1%}) | {ratio} |")
    lines += [
        "",
        "### Restore: base backup + replay of the archive to its end, then promotion",
        "",
        f"Each tool restores the base backup it took of the same idle cluster, then PostgreSQL replays "
        f"the archive through the tool's restore_command to its end ({g['last_wal']}) and promotes; "
        f"the restored pgbench_history matches the source ({g['pgbench_history_rows']:,} rows) every time.",
        "",
        "| Configuration | Total s (median) | min–max | Restore files s | Replay + promote s | Segments replayed | Base backup MiB | Ratio pgBackRest / ours |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    sizes = {"ours_zstd1": g["backups"]["ours"]["result"]["size"], "pgb_gz6": g["backups"]["bench-gz"]["size"],
             "pgb_zst1": g["backups"]["bench-zst"]["size"]}
    for key, label, _tool, _s in RESTORE_CONFIGS:
        r = rest[key]
        ratio = "1.00x" if key == "ours_zstd1" else f"{r['seconds']['median'] / rest['ours_zstd1']['seconds']['median']:.2f}x"
        lines.append(f"| {label} | {r['seconds']['median']:.1f} | {r['seconds']['min']:.1f}–{r['seconds']['max']:.1f} | "
                     f"{r['restore_s']['median']:.1f} | {r['replay_s']['median']:.1f} | {r['segments_replayed']} | "
                     f"{mib(sizes[key])} | {ratio} |")
    t = res["targets"]
    lines += [
        "",
        f"Target (issue 4, item 7): archive-push at least pgBackRest's single-process rate. "
        f"zstd 1 vs. zst 1: **{'met' if t['push_zstd_vs_pgb_zst1'] else 'missed'}** "
        f"({push['ours_zstd1']['segments_per_s']['median']:.2f} vs. {push['pgb_zst1']['segments_per_s']['median']:.2f} segments/s); "
        f"vs. pgBackRest's default gz 6: **{'met' if t['push_zstd_vs_pgb_gz6'] else 'missed'}**.",
        "",
    ]
    cpu = {k: push[k]["cpu_seconds"]["median"] * 1000 / n for k, *_ in PUSH_CONFIGS}
    share = {k: push[k]["stored_bytes"] / (n * SEG) for k, *_ in PUSH_CONFIGS}
    per_seg = {k: rest[k]["replay_s"]["median"] * 1000 / max(rest[k]["segments_replayed"], 1) for k in rest}
    lines += [
        f"Reading the numbers. Per segment dine360-backup (zstd 1) spends {cpu['ours_zstd1']:.0f} ms of CPU, "
        f"pgBackRest {cpu['pgb_zst1']:.0f} ms with the same compressor and level (zst 1) and "
        f"{cpu['pgb_gz6']:.0f} ms with its default gz 6. With zstd at level 1 both store about the same "
        f"({share['ours_zstd1']:.1%} and {share['pgb_zst1']:.1%} of the WAL), so the gap to pgBackRest's zst 1 "
        "is the fixed cost of each process: a Python interpreter and its imports (the JSON configuration, "
        "hashlib, zstandard) against a C binary, paid once per segment because archive_command starts one "
        "process per segment. Against pgBackRest's default, gz 6, compression dominates and zstd 1 wins on "
        f"both counts: {cpu['pgb_gz6'] / cpu['ours_zstd1']:.1f}x less CPU per segment for "
        f"{share['ours_zstd1']:.1%} instead of {share['pgb_gz6']:.1%} of the WAL stored. That is why zstd 1 is "
        f"our default; lz4 ({cpu['ours_lz4']:.0f} ms per segment, {share['ours_lz4']:.1%} stored) "
        f"{'saves %.0f ms of CPU per segment' % (cpu['ours_zstd1'] - cpu['ours_lz4']) if cpu['ours_lz4'] < cpu['ours_zstd1'] - 5 else 'costs about the same CPU'} "
        f"but stores {push['ours_lz4']['stored_bytes'] / push['ours_zstd1']['stored_bytes']:.1f}x as much, "
        "so it does not pay off for 16 MiB segments to a path.",
        "",
        "In the restore, fetching the base backup is the small part "
        f"({rest['ours_zstd1']['restore_s']['median']:.1f} s for ours, one zstd-compressed tar stream checked "
        f"by pg_verifybackup; {rest['pgb_gz6']['restore_s']['median']:.1f} s and "
        f"{rest['pgb_zst1']['restore_s']['median']:.1f} s for pgBackRest, one compressed file per database "
        "file); the replay dominates, because PostgreSQL calls restore_command once per segment: "
        f"{per_seg['ours_zstd1']:.0f} ms per segment with `dine360-backup wal-get` against "
        f"{per_seg['pgb_gz6']:.0f} ms (gz) and {per_seg['pgb_zst1']:.0f} ms (zst) with "
        "`pgbackrest archive-get`, replay included. The segments replayed differ by a few between the tools "
        "because each backup ends at its own WAL position; all end at the same last segment.",
        "",
        "Reproduce (as root, about ten minutes):",
        "",
        "```sh",
        f".venv/bin/python bench/backup_bench.py --runs {res['runs']} --scale {g['scale']} "
        f"--segments {res['segments_requested']} --output .artifacts/backup_bench.json --markdown docs/BENCHMARKS.md",
        "```",
        END,
    ]
    return "\n".join(lines) + "\n"


def revision() -> str:
    def git(*a: str) -> str:
        return subprocess.run(["git", "-C", ROOT, *a], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True, check=False).stdout.strip()
    rev = git("log", "-1", "--format=%h", "--", CLI_SRC, STORE_SRC)
    dirty = git("status", "--porcelain", "--", CLI_SRC, STORE_SRC)
    return rev + ("+local changes" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="repetitions of every measurement (default 3)")
    ap.add_argument("--scale", type=int, default=20, help="pgbench -i scale of the backed-up database (default 20)")
    ap.add_argument("--segments", type=int, default=80,
                    help="16 MiB segments of WAL written by transactions after the backups (default 80)")
    ap.add_argument("--output", help="write the raw results as JSON to this file")
    ap.add_argument("--markdown", help="markdown file whose backup_bench section is rewritten")
    ap.add_argument("--skip-restore", action="store_true", help="only the archive-push rate")
    ap.add_argument("--keep", action="store_true", help="leave the temporary directory for debugging")
    ap.add_argument("--render-from", metavar="JSON",
                    help="only rewrite the --markdown section from a results file written by --output")
    args = ap.parse_args(argv)
    if args.render_from:
        if not args.markdown:
            ap.error("--render-from needs --markdown")
        with open(args.render_from, encoding="utf-8") as fh:
            write_section(args.markdown, render(json.load(fh)), START, END)
        return 0
    for binary in (os.path.join(PG_BIN, "postgres"), PGBACKREST):
        if not os.path.exists(binary):
            raise SystemExit(f"{binary} not found: run scripts/setup.sh")
    b = Bench(args)
    load_before = os.getloadavg()[0]
    log(f"working in {b.base}; load average {load_before:.1f}")
    started = time.monotonic()
    try:
        generated = b.generate()
        log(f"WAL set: {generated['segments_in_set']} segments; {generated['transactions']} transactions")
        raw_push = {k: [] for k, *_ in PUSH_CONFIGS}
        raw_restore = {k: [] for k, *_ in RESTORE_CONFIGS}
        for rep in range(args.runs):
            for key, _label, tool, settings in PUSH_CONFIGS:
                r = b.push_once(key, tool, settings, rep)
                r["load"] = round(os.getloadavg()[0], 1)
                raw_push[key].append(r)
                log(f"push {key} run {rep + 1}: {r['segments_per_s']} segments/s ({r['seconds']} s)")
        if not args.skip_restore:
            for rep in range(args.runs):
                for key, _label, tool, settings in RESTORE_CONFIGS:
                    r = b.restore_once(key, tool, settings, rep, generated["pgbench_history_rows"])
                    r["load"] = round(os.getloadavg()[0], 1)
                    raw_restore[key].append(r)
                    log(f"restore {key} run {rep + 1}: {r['seconds']} s (files {r['restore_s']} s, "
                        f"{r['segments_replayed']} segments replayed)")
    finally:
        b.stop_all()
        if args.keep:
            log(f"kept {b.base}")
        else:
            shutil.rmtree(b.base, ignore_errors=True)
    vers = run([SYSTEM_PYTHON, "-c", "import sys, zstandard, lz4; print(sys.version.split()[0], "
                "zstandard.__version__, lz4.__version__)"]).stdout.split()
    push = {k: {"segments_per_s": summary([r["segments_per_s"] for r in v]),
                "seconds": summary([r["seconds"] for r in v]),
                "cpu_seconds": summary([r["cpu_seconds"] for r in v]),
                "stored_bytes": v[0]["stored_bytes"], "runs": v} for k, v in raw_push.items()}
    restore = {k: {"seconds": summary([r["seconds"] for r in v]), "restore_s": summary([r["restore_s"] for r in v]),
                   "replay_s": summary([r["replay_s"] for r in v]), "segments_replayed": v[0]["segments_replayed"],
                   "runs": v} for k, v in raw_restore.items() if v}
    res = {"measured": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"), "machine": machine(),
           "pgbackrest": run([PGBACKREST, "version"]).stdout.strip(), "python": vers[0], "zstandard": vers[1],
           "lz4": vers[2], "revision": revision(), "runs": args.runs, "segments_requested": args.segments,
           "generated": generated, "push": push, "restore": restore,
           "total_seconds": round(time.monotonic() - started), "load_before": load_before,
           "load_during": summary([r["load"] for v in list(raw_push.values()) + list(raw_restore.values()) for r in v])}
    med = lambda k: push[k]["segments_per_s"]["median"]  # noqa: E731
    res["ratios"] = {"push_ours_zstd1_over_pgb_zst1": round(med("ours_zstd1") / med("pgb_zst1"), 2),
                     "push_ours_zstd1_over_pgb_gz6": round(med("ours_zstd1") / med("pgb_gz6"), 2),
                     "push_ours_lz4_over_pgb_zst1": round(med("ours_lz4") / med("pgb_zst1"), 2)}
    if restore:
        for k in ("pgb_gz6", "pgb_zst1"):
            res["ratios"][f"restore_{k}_over_ours"] = round(
                restore[k]["seconds"]["median"] / restore["ours_zstd1"]["seconds"]["median"], 2)
    res["targets"] = {"push_zstd_vs_pgb_zst1": med("ours_zstd1") >= med("pgb_zst1"),
                      "push_zstd_vs_pgb_gz6": med("ours_zstd1") >= med("pgb_gz6")}
    print(json.dumps(res["ratios"], indent=1))
    print(json.dumps(res["targets"]))
    log(f"total {res['total_seconds']} s")
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w", encoding="utf-8") as fh:
            json.dump(res, fh, indent=2)
            fh.write("\n")
    if args.markdown:
        if not restore:
            raise SystemExit("--markdown needs the restore measurement (drop --skip-restore)")
        write_section(args.markdown, render(res), START, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
