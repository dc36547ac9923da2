#!/usr/bin/env python3
"""Time building the DB tier from bare containers, and the idempotent re-run.

    python bench/tier_build.py [--output docs/BENCHMARKS.md]

Destroys the lab's containers (not the cached base image), then times
`scripts/lab.sh up` (containers + playbooks/site.yml, packages from Debian's mirror)
and a second `ansible-playbook playbooks/site.yml` run, which must report changed=0.
"""
import argparse
import datetime as dt
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from ha_failover import machine, write_section  # noqa: E402

START = "<!-- tier_build:start -->"
END = "<!-- tier_build:end -->"


def run(cmd, env=None):
    t0 = time.monotonic()
    p = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    took = time.monotonic() - t0
    if p.returncode != 0:
        sys.stdout.write(p.stdout[-4000:])
        raise SystemExit("%s failed (rc=%d)" % (" ".join(cmd), p.returncode))
    return took, p.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output")
    args = ap.parse_args()
    venv_bin = os.path.join(ROOT, ".venv", "bin")
    env = dict(os.environ, PATH=venv_bin + os.pathsep + os.environ["PATH"])
    run(["scripts/lab.sh", "down"], env)
    build, _ = run(["scripts/lab.sh", "up"], env)
    rerun, out = run([os.path.join(venv_bin, "ansible-playbook"), "-i", "inventories/lab", "playbooks/site.yml"], env)
    changed = sum(int(m) for m in re.findall(r"changed=(\d+)", out))
    print("build from bare containers: %.0f s; idempotent re-run: %.0f s (changed=%d)" % (build, rerun, changed))
    if args.output:
        section = "\n".join([
            START,
            "## Building the DB tier (bench/tier_build.py)",
            "",
            "Measured %s UTC on %s. Three bare systemd containers (cached base image), packages"
            " from Debian's mirror, `scripts/lab.sh up` end to end; then `playbooks/site.yml` again."
            % (dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"), machine()),
            "",
            "| Step | Seconds | Target |",
            "|---|---:|---|",
            "| Build the tier from bare containers (`scripts/lab.sh up`) | %.0f | - |" % build,
            "| Idempotent re-run of `playbooks/site.yml` (changed=%d) | %.0f | < 60 s |" % (changed, rerun),
            END,
        ]) + "\n"
        write_section(args.output, section, START, END)
    return 0 if changed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
