"""Restart Patroni on a replica stuck on a diverged timeline, so that it runs pg_rewind.

    dine360-replica-guard [--api URL] [--unit NAME] [--grace S] [--min-interval S] [--state FILE]

A former primary that was killed can hold WAL past the point where the new primary's
timeline branched off. Patroni checks for that when it starts PostgreSQL and runs pg_rewind,
but when the check cannot reach a primary that is ready (the new leader still promoting, or
demoting and promoting again after a DCS hiccup), Patroni 3.0 skips it and starts PostgreSQL
as a standby anyway. That standby then asks for WAL the new primary does not have, forever:
"requested starting point ... is not in this server's history", state "starting", and no
later loop of Patroni checks again (seen on the lab after a kill of the primary mid-archive;
patroni/patroni issues 941, 3652).

Run by a timer. When Patroni reports this member as a starting replica and its journal has
shown that message for --grace seconds, the guard restarts Patroni: PostgreSQL is stopped
with it, and the next start checks the timelines again against a ready primary and rewinds.
It never acts on a primary, at most once per --min-interval, and does nothing while Patroni's
REST API does not answer. Prints what it did (the journal of its own unit keeps it).
"""
import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request

SIGNATURE = "is not in this server's history"


def decide(member, journal, now, state, grace, min_interval):
    """(action, new state, message): action is 'restart', 'wait' or 'none'."""
    role = (member or {}).get('role')
    if member is None or role in ('master', 'primary') or member.get('state') != 'starting' \
            or SIGNATURE not in journal:
        return 'none', {'last_restart': state.get('last_restart', 0)}, None
    first = state.get('first_seen') or now
    new = dict(state, first_seen=first)
    if now - first < grace:
        return 'wait', new, 'replica stuck on a diverged timeline for %d s (restart after %d s)' % (now - first, grace)
    if now - state.get('last_restart', 0) < min_interval:
        return 'wait', new, 'replica still stuck on a diverged timeline, Patroni restarted %d s ago: leaving it' % (
            now - state.get('last_restart', 0))
    return 'restart', {'last_restart': now}, (
        'replica stuck on a diverged timeline for %d s ("%s"): restarting Patroni so that it checks the '
        'timelines again and runs pg_rewind' % (now - first, SIGNATURE))


def _load(path):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def _save(path, state):
    tmp = path + '.tmp'
    with open(tmp, 'w') as fh:
        json.dump(state, fh)
    os.replace(tmp, path)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--api', default='http://127.0.0.1:8008')
    ap.add_argument('--unit', default='patroni')
    ap.add_argument('--grace', type=int, default=60)
    ap.add_argument('--min-interval', type=int, default=600)
    ap.add_argument('--state', default='/run/dine360-replica-guard.json')
    args = ap.parse_args(argv)
    try:
        with urllib.request.urlopen(args.api + '/patroni', timeout=5) as resp:
            member = json.loads(resp.read().decode())
    except Exception:  # Patroni down or starting: nothing to judge  # pylint: disable=broad-except
        member = None
    journal = ''
    if member is not None and member.get('state') == 'starting':
        journal = subprocess.run(
            ['journalctl', '-u', args.unit, '--since', '-%ds' % (args.grace + 30), '-o', 'cat', '--no-pager'],
            capture_output=True, text=True, check=False).stdout
    action, state, message = decide(member, journal, time.time(), _load(args.state), args.grace, args.min_interval)
    _save(args.state, state)
    if message:
        print('dine360-replica-guard: ' + message)
    if action == 'restart':
        subprocess.run(['systemctl', 'restart', args.unit], check=True)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
