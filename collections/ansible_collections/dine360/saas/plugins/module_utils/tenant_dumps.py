# -*- coding: utf-8 -*-
# Copyright: (c) 2026, dine360.saas engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Per-tenant dumps: take, record, restore and expire, for ``dine360.saas.tenant_dump``.

Layout in every target (see docs/tenants.md)::

    <cluster>/dumps/<tenant>/<UTC timestamp>-<kind>.dump    pg_dump -Fc of the tenant database
    <cluster>/dumps/<tenant>/<UTC timestamp>-<kind>.json    its manifest (sha256, size, oid, ...)
    <cluster>/dumps/_globals/<UTC timestamp>.sql            pg_dumpall --globals-only
    <cluster>/dumps/_globals/<UTC timestamp>.json           its manifest

A dump streams from ``pg_dump`` through a SHA-256 into every target at once (one
uploader thread per target, bounded in-memory pipes); the object reaches its final
name only when pg_dump exited 0, and the manifest is written after the dump is stored
in every target, so a dump without a manifest is never restored (expire removes it).
Several tenants are dumped in parallel. Every target is checked (a write probe) before
anything is dumped.

A restore downloads the dump, verifies its SHA-256 and size against the manifest before
any database is touched, restores into ``<name>__restoring`` and only then moves it into
place (the current database, if any, is renamed aside to ``<name>__pre_<timestamp>``).
Names with ``__`` are never tenant names (``tenants.NAME_RE``), so these cannot collide.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import datetime
import hashlib
import io
import json
import os
import queue
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.dine360.saas.plugins.module_utils.backup_store import (
    CHUNK,
    BackupError,
    ChecksumError,
    HashingReader,
    ObjectExists,
    TargetError,
    make_target,
)
from ansible_collections.dine360.saas.plugins.module_utils.tenants import (
    BACKUP_CATALOG_DDL,
    name_problem,
)

try:
    from psycopg2 import sql
except ImportError:  # reported by the module through ensure_required_libs
    sql = None

KINDS = ('scheduled', 'manual', 'final', 'pre-restore')
TS_FORMAT = '%Y%m%dT%H%M%SZ'
TS_RE = re.compile(r'^[0-9]{8}T[0-9]{6}Z$')
DUMP_RE = re.compile(r'^(?P<ts>[0-9]{8}T[0-9]{6}Z)-(?P<kind>[a-z-]+)\.(?P<ext>dump|json)$')
GLOBALS = '_globals'
RESTORING_SUFFIX = '__restoring'
ASIDE_INFIX = '__pre_'
PG_BIN = '/usr/lib/postgresql/15/bin'
STDERR_TAIL = 2000


class DumpError(BackupError):
    """A dump, restore or expiry that did not happen; ``errors`` lists each cause."""

    def __init__(self, errors, **details):
        if isinstance(errors, str):
            errors = [errors]
        self.errors = list(errors)
        self.details = details
        super(DumpError, self).__init__('; '.join(self.errors))


# --------------------------------------------------------------------------- names and keys

def utc_timestamp(now=None):
    return (now or datetime.datetime.now(datetime.timezone.utc)).strftime(TS_FORMAT)


def parse_timestamp(ts):
    return datetime.datetime.strptime(ts, TS_FORMAT).replace(tzinfo=datetime.timezone.utc)


def tenant_prefix(cluster, tenant):
    return '%s/dumps/%s/' % (cluster, tenant)


def dump_key(cluster, tenant, ts, kind):
    return '%s%s-%s.dump' % (tenant_prefix(cluster, tenant), ts, kind)


def manifest_key(key):
    return key[:-len('.dump')] + '.json' if key.endswith('.dump') else key[:-len('.sql')] + '.json'


def globals_key(cluster, ts):
    return '%s/dumps/%s/%s.sql' % (cluster, GLOBALS, ts)


def location(target, key):
    """Where an object lives, for the catalog and the operator (no credentials)."""
    if target.kind == 's3':
        return 's3://%s/%s' % (target.bucket, '/'.join(p for p in (target.prefix, key) if p))
    return os.path.join(target.root, target.prefix, key)


def check_name(name, what='tenant'):
    problem = name_problem(name)
    if problem:
        raise DumpError('%s name %r is not a tenant name: %s' % (what, name, problem))
    return name


def check_cluster(cluster):
    if not cluster or not re.match(r'^[A-Za-z0-9][A-Za-z0-9._-]*$', cluster):
        raise DumpError('cluster %r must be a simple name (letters, digits, dot, dash, underscore): '
                        'set backup_cluster_name' % (cluster,))
    return cluster


def open_targets(specs, write=True, cluster=''):
    """Targets from their specs, each checked (the write probe goes under ``cluster``, the
    part of a shared mount this cluster owns); fails naming every unusable target."""
    if not specs:
        raise DumpError('no backup target is configured: set backup_targets (a list of path or s3 targets)')
    targets, errors = [], []
    for i, spec in enumerate(specs):
        try:
            target = make_target(spec)
            target.check(write=write, under=cluster)
            targets.append(target)
        except BackupError as e:
            errors.append('backup_targets[%d]: %s' % (i, e))
    if errors:
        raise DumpError(errors)
    return targets


# --------------------------------------------------------------------------- streaming into targets

class _Pipe(object):
    """A bounded in-memory pipe from the dump thread to one target's ``put``.

    ``read`` raises OSError when the producer reports a failure, so ``put`` never
    moves a truncated dump to its final name.
    """

    def __init__(self, depth=4):
        self.q = queue.Queue(depth)
        self.buf = b''
        self.eof = False
        self.abandoned = False

    def write(self, item):
        """A block of bytes, None for end of data, or an exception for a failed producer."""
        while not self.abandoned:
            try:
                self.q.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def read(self, n=-1):
        while not self.eof and (n is None or n < 0 or len(self.buf) < n):
            item = self.q.get()
            if item is None:
                self.eof = True
            elif isinstance(item, Exception):
                self.eof = True
                raise item
            else:
                self.buf += item
        if n is None or n < 0:
            out, self.buf = self.buf, b''
        else:
            out, self.buf = self.buf[:n], self.buf[n:]
        return out


def stream_to_targets(argv, env, targets, key):
    """Run ``argv`` and store its stdout under ``key`` in every target.

    Returns (sha256 hex, size). On failure nothing is left under ``key``.
    """
    pipes = [_Pipe() for dummy in targets]
    errors = [None] * len(targets)

    def upload(i):
        try:
            targets[i].put(key, pipes[i])
        except ObjectExists:
            errors[i] = TargetError('%s already exists in %s' % (key, targets[i].describe()))
        except Exception as e:  # pylint: disable=broad-except
            errors[i] = e
        finally:
            pipes[i].abandoned = True

    threads = [threading.Thread(target=upload, args=(i,), daemon=True) for i in range(len(targets))]
    for t in threads:
        t.start()
    sha, size, killed = hashlib.sha256(), 0, False
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, env=env)
        try:
            while True:
                block = proc.stdout.read(CHUNK)
                if not block:
                    break
                sha.update(block)
                size += len(block)
                for p in pipes:
                    p.write(block)
                if all(p.abandoned for p in pipes):  # every target failed: stop the dump
                    proc.kill()
                    killed = True
                    break
        finally:
            proc.stdout.close()
            rc = proc.wait()
        err.seek(0)
        stderr = err.read().decode('utf-8', 'replace')[-STDERR_TAIL:].strip()
    failure = None
    if rc != 0:
        failure = OSError('%s exited with %d' % (os.path.basename(argv[0]), rc))
    for p in pipes:
        p.write(failure)
    for t in threads:
        t.join()
    if rc != 0 and not killed:  # the targets' errors are only its consequence
        problems = ['%s exited with %d: %s' % (os.path.basename(argv[0]), rc, stderr or 'no message')]
    else:
        problems = ['%s: %s' % (targets[i].describe(), e) for i, e in enumerate(errors) if e is not None]
    if problems:
        for i, t in enumerate(targets):
            if errors[i] is None:  # stored in this target: remove it, the dump failed elsewhere
                try:
                    t.delete(key)
                except BackupError:
                    pass
        raise DumpError(problems)
    return sha.hexdigest(), size


def put_everywhere(targets, key, data):
    for t in targets:
        try:
            t.put(key, io.BytesIO(data))
        except ObjectExists:
            raise DumpError('%s already exists in %s' % (key, t.describe()))


# --------------------------------------------------------------------------- dump

def pg_env(params):
    env = dict(os.environ)
    for var in ('PGPASSWORD', 'PGPASSFILE', 'PGSERVICE', 'PGOPTIONS'):
        env.pop(var, None)
    if params.get('login_password'):
        env['PGPASSWORD'] = params['login_password']
    env['PGCONNECT_TIMEOUT'] = str(params.get('connect_timeout') or 10)
    env['PGAPPNAME'] = 'dine360.saas.tenant_dump'
    return env


def pg_conn_args(params):
    args = ['--username', params['login_user'], '--port', str(params['login_port']), '--no-password']
    host = params.get('login_unix_socket') or params.get('login_host')
    if host:
        args[0:0] = ['--host', host]
    return args


def read_databases(cursor, names):
    cursor.execute(
        "SELECT d.datname, d.oid, pg_catalog.pg_get_userbyid(d.datdba), d.datallowconn, d.datconnlimit,"
        " pg_catalog.pg_encoding_to_char(d.encoding), d.datcollate, d.datctype"
        " FROM pg_catalog.pg_database d WHERE d.datname = ANY(%s)", (list(names),))
    return dict((r[0], dict(oid=r[1], owner=r[2], allow_connections=r[3], connection_limit=r[4],
                            encoding=r[5], collate=r[6], ctype=r[7])) for r in cursor.fetchall())


def server_facts(cursor):
    cursor.execute("SELECT current_setting('server_version'), pg_catalog.pg_is_in_recovery()")
    version, in_recovery = cursor.fetchone()
    return dict(pg_version=version, in_recovery=in_recovery)


def dump(params, connect, tenants, targets_spec, cluster, kind='manual', parallel=4, pg_bin=PG_BIN,
         dump_globals=True, node=None, now=None, check_mode=False, metrics_file=None, skip_missing=False):
    """Dump ``tenants`` to every target. Returns the result dict of the module."""
    if kind not in KINDS:
        raise DumpError('kind must be one of %s' % ', '.join(KINDS))
    check_cluster(cluster)
    names = [check_name(t) for t in tenants]
    if len(set(names)) != len(names):
        raise DumpError('a tenant is named twice in tenants')
    for prog in ('pg_dump', 'pg_dumpall'):
        if not os.access(os.path.join(pg_bin, prog), os.X_OK):
            raise DumpError('%s not found in %s: install postgresql-client-15 or set pg_bin' % (prog, pg_bin))
    targets = open_targets(targets_spec, write=not check_mode, cluster=cluster)
    node = node or socket.gethostname()
    warnings = []
    conn = connect(None)
    try:
        cur = conn.cursor()
        facts = server_facts(cur)
        dbs = read_databases(cur, names)
        missing = [n for n in names if n not in dbs]
        if missing and not skip_missing:
            raise DumpError(['tenant %r has no database on this cluster: nothing was dumped' % n for n in missing])
        names = [n for n in names if n in dbs]
        closed = [n for n in names if not dbs[n]['allow_connections']]
        if closed and facts['in_recovery']:
            if kind == 'final':
                raise DumpError(['tenant %r is suspended (ALLOW_CONNECTIONS false) and this node is a replica: '
                                 'a final dump of a suspended tenant is taken on the primary' % n for n in closed])
            for n in closed:
                warnings.append('tenant %r is suspended (no connections, so no changes since its last dump): '
                                'skipped on this replica' % n)
            names = [n for n in names if n not in closed]
        ts = utc_timestamp(now)
        skipped = missing + [n for n in closed if facts['in_recovery']]
        result = dict(changed=bool(names), node=node, skipped=skipped, in_recovery=facts['in_recovery'], pg_version=facts['pg_version'],
                      timestamp=ts, kind=kind, dumps={}, globals=None, records=[], warnings=warnings,
                      targets=[t.describe() for t in targets])
        if check_mode:
            for n in names:
                result['dumps'][n] = dict(key=dump_key(cluster, n, ts, kind), datoid=dbs[n]['oid'])
            return result
        opened = []
        try:
            for n in closed if not facts['in_recovery'] else []:
                # Superusers only while the dump runs (CONNECTION LIMIT 0 does not apply to them).
                ident = sql.Identifier(n)
                cur.execute(sql.SQL('ALTER DATABASE {} CONNECTION LIMIT 0').format(ident))
                cur.execute(sql.SQL('ALTER DATABASE {} ALLOW_CONNECTIONS true').format(ident))
                opened.append(n)
            if dump_globals and names:
                result['globals'] = _dump_globals(params, targets, cluster, ts, node, facts, pg_bin)
            env = pg_env(params)

            def one(name):
                start = time.time()
                key = dump_key(cluster, name, ts, kind)
                argv = [os.path.join(pg_bin, 'pg_dump'), '--format=custom'] + pg_conn_args(params) + ['--dbname', name]
                sha, size = stream_to_targets(argv, env, targets, key)
                db = dbs[name]
                manifest = dict(format='dine360-tenant-dump 1', tenant=name, datname=name, datoid=db['oid'],
                                owner=db['owner'], encoding=db['encoding'], collate=db['collate'], ctype=db['ctype'],
                                kind=kind, sha256=sha, size=size, pg_version=facts['pg_version'],
                                taken_at=parse_timestamp(ts).isoformat(), timestamp=ts, node=node,
                                from_replica=facts['in_recovery'], key=key)
                put_everywhere(targets, manifest_key(key), json.dumps(manifest, indent=1, sort_keys=True).encode('utf-8'))
                return dict(key=key, locations=[location(t, key) for t in targets], sha256=sha, size=size,
                            datoid=db['oid'], seconds=round(time.time() - start, 3))

            failures = []
            with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(names) or 1))) as pool:
                futures = dict((n, pool.submit(one, n)) for n in names)
                for n in names:
                    try:
                        result['dumps'][n] = futures[n].result()
                    except BackupError as e:
                        failures.extend('tenant %r: %s' % (n, m) for m in getattr(e, 'errors', [str(e)]))
                    except Exception as e:  # pylint: disable=broad-except
                        failures.append('tenant %r: %s' % (n, e))
        finally:
            for n in opened:
                ident = sql.Identifier(n)
                cur.execute(sql.SQL('ALTER DATABASE {} ALLOW_CONNECTIONS false').format(ident))
                cur.execute(sql.SQL('ALTER DATABASE {} CONNECTION LIMIT {}').format(
                    ident, sql.Literal(dbs[n]['connection_limit'])))
        for n, d in sorted(result['dumps'].items()):
            for loc in d['locations']:
                result['records'].append(dict(datname=n, datoid=d['datoid'], kind=kind, location=loc,
                                              checksum='sha256:' + d['sha256'], taken_at=parse_timestamp(ts).isoformat()))
        if metrics_file and result['dumps']:
            write_metrics(metrics_file, result['dumps'], parse_timestamp(ts))
        result['recorded'] = False
        if not facts['in_recovery'] and result['records']:
            record(cur, result['records'])
            result['recorded'] = True
        if failures:
            raise DumpError(failures, result=result)
        return result
    finally:
        conn.close()


def _dump_globals(params, targets, cluster, ts, node, facts, pg_bin):
    key = globals_key(cluster, ts)
    argv = [os.path.join(pg_bin, 'pg_dumpall'), '--globals-only'] + pg_conn_args(params)
    sha, size = stream_to_targets(argv, pg_env(params), targets, key)
    manifest = dict(format='dine360-globals-dump 1', kind='globals', sha256=sha, size=size, timestamp=ts,
                    taken_at=parse_timestamp(ts).isoformat(), node=node, pg_version=facts['pg_version'], key=key)
    put_everywhere(targets, manifest_key(key), json.dumps(manifest, indent=1, sort_keys=True).encode('utf-8'))
    return dict(key=key, sha256=sha, size=size)


# --------------------------------------------------------------------------- record (on the primary)

def record(cursor, records, check_mode=False):
    """Insert the dumps into dine360.tenant_backups (on the primary). Returns the rows added."""
    cursor.execute('SELECT pg_catalog.pg_is_in_recovery()')
    if cursor.fetchone()[0]:
        raise DumpError('dumps are recorded on the primary: this node is a replica')
    errors, added = [], []
    for r in records:
        for k in ('datname', 'datoid', 'kind', 'location', 'taken_at'):
            if k not in r:
                errors.append('record %r has no %s' % (r, k))
    if errors:
        raise DumpError(errors)
    cursor.execute('SELECT pg_catalog.to_regclass(%s) IS NOT NULL', ('dine360.tenant_backups',))
    exists = cursor.fetchone()[0]
    if not exists and not check_mode:
        cursor.execute(BACKUP_CATALOG_DDL)
        exists = True
    for r in records:
        cursor.execute('SELECT oid FROM pg_catalog.pg_database WHERE datname = %s', (r['datname'],))
        row = cursor.fetchone()
        if row is None or int(row[0]) != int(r['datoid']):
            errors.append('database %r is not the one that was dumped (oid %s, now %s): not recorded'
                          % (r['datname'], r['datoid'], row[0] if row else 'absent'))
            continue
        if exists:
            cursor.execute('SELECT 1 FROM dine360.tenant_backups WHERE datoid = %s AND location = %s',
                           (int(r['datoid']), r['location']))
            if cursor.fetchone():
                continue
        if not check_mode:
            cursor.execute('INSERT INTO dine360.tenant_backups (datname, datoid, kind, location, checksum, taken_at)'
                           ' VALUES (%s, %s, %s, %s, %s, %s)',
                           (r['datname'], int(r['datoid']), r['kind'], r['location'], r.get('checksum'), r['taken_at']))
        added.append(r)
    if errors:
        raise DumpError(errors)
    return added


# --------------------------------------------------------------------------- metrics

# The names and labels the BackupTenantDumpTooOld alert (prometheus role) reads; the
# dine360-backup command writes the same metric with kind="basebackup" etc.
METRIC_TS = 'dine360_backup_last_success_timestamp_seconds'
METRIC_SIZE = 'dine360_backup_size_bytes'
_METRIC_RE = re.compile(r'^(%s|%s)\{kind="tenant_dump",tenant="([a-z0-9-]+)"\} (\S+)$' % (METRIC_TS, METRIC_SIZE))


def write_metrics(path, dumps, when):
    """Merge the dumps into node_exporter's textfile (other tenants' lines are kept); atomic."""
    values = {METRIC_TS: {}, METRIC_SIZE: {}}
    try:
        with open(path) as f:
            for line in f:
                m = _METRIC_RE.match(line.strip())
                if m:
                    values[m.group(1)][m.group(2)] = m.group(3)
    except (IOError, OSError):
        pass
    stamp = (when - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)).total_seconds()
    for name, d in dumps.items():
        values[METRIC_TS][name] = '%d' % stamp
        values[METRIC_SIZE][name] = '%d' % d['size']
    lines = ['# HELP %s Time of the last successful dump of the tenant database.' % METRIC_TS,
             '# TYPE %s gauge' % METRIC_TS]
    lines += ['%s{kind="tenant_dump",tenant="%s"} %s' % (METRIC_TS, n, v) for n, v in sorted(values[METRIC_TS].items())]
    lines += ['# HELP %s Size of the last successful dump of the tenant database.' % METRIC_SIZE,
              '# TYPE %s gauge' % METRIC_SIZE]
    lines += ['%s{kind="tenant_dump",tenant="%s"} %s' % (METRIC_SIZE, n, v) for n, v in sorted(values[METRIC_SIZE].items())]
    directory = os.path.dirname(path) or '.'
    fd, tmp = tempfile.mkstemp(prefix='.dine360_tenant_dumps.', dir=directory)
    try:
        with os.fdopen(fd, 'w') as f:
            f.write('\n'.join(lines) + '\n')
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------- catalogue of stored dumps

def list_dumps(target, cluster, tenant):
    """[(timestamp, kind, dump key, has manifest)] of a tenant in a target, oldest first."""
    entries = {}
    prefix = tenant_prefix(cluster, tenant)
    for key in target.list(prefix):
        m = DUMP_RE.match(key[len(prefix):])
        if not m:
            continue
        e = entries.setdefault((m.group('ts'), m.group('kind')), dict(dump=False, manifest=False))
        e['dump' if m.group('ext') == 'dump' else 'manifest'] = True
    return [dict(timestamp=ts, kind=kind, key='%s%s-%s.dump' % (prefix, ts, kind), **flags)
            for (ts, kind), flags in sorted(entries.items())]


def list_tenants(target, cluster):
    names = set()
    base = '%s/dumps/' % cluster
    for key in target.list(base):
        first = key[len(base):].split('/', 1)[0]
        if first != GLOBALS:
            names.add(first)
    return sorted(names)


def find_dump(targets, cluster, tenant, restore_from='latest'):
    """(target, manifest) of the dump to restore: the newest complete one, or the one named."""
    problems = []
    for target in targets:
        try:
            entries = [e for e in list_dumps(target, cluster, tenant) if e['dump'] and e['manifest']]
        except BackupError as e:
            problems.append('%s: %s' % (target.describe(), e))
            continue
        if restore_from in (None, '', 'latest'):
            chosen = entries[-1:] if entries else []
        elif TS_RE.match(restore_from):
            chosen = [e for e in entries if e['timestamp'] == restore_from]
        else:
            chosen = [e for e in entries if restore_from in (e['key'], e['key'].rsplit('/', 1)[-1])]
        if not chosen:
            problems.append('%s: no dump of %r matching %r (%d complete dumps: %s)' % (
                target.describe(), tenant, restore_from or 'latest', len(entries),
                ', '.join(e['timestamp'] + '-' + e['kind'] for e in entries[-5:]) or 'none'))
            continue
        with target.get(manifest_key(chosen[-1]['key'])) as f:
            manifest = json.loads(f.read().decode('utf-8'))
        return target, manifest
    raise DumpError(problems or ['no target to restore from'])


def download_verified(target, manifest, directory):
    """Download the dump to a private temporary file and verify size and SHA-256."""
    fd, path = tempfile.mkstemp(prefix='.dine360-restore-', suffix='.dump', dir=directory)
    try:
        src = target.get(manifest['key'])
        try:
            read = HashingReader(src)
            with os.fdopen(fd, 'wb') as out:
                shutil.copyfileobj(read, out, CHUNK)
        finally:
            src.close()
        sha, size = read.sha, read.size
        if sha.hexdigest() != manifest['sha256'] or size != manifest['size']:
            raise ChecksumError('%s in %s does not match its manifest (manifest: sha256 %s, %d bytes; read: sha256 %s, '
                                '%d bytes): the dump is damaged, nothing was restored. Choose another with restore_from'
                                % (manifest['key'], target.describe(), manifest['sha256'], manifest['size'],
                                   sha.hexdigest(), size))
    except BaseException:
        os.unlink(path)
        raise
    return path


# --------------------------------------------------------------------------- restore (on the primary)

def _terminate(cur, name):
    cur.execute('SELECT count(pg_catalog.pg_terminate_backend(pid)) FROM pg_catalog.pg_stat_activity'
                ' WHERE datname = %s AND pid <> pg_catalog.pg_backend_pid()', (name,))


def _rename(cur, old, new, attempts=10):
    """ALTER DATABASE ... RENAME, ending the sessions on it (they may reconnect in between)."""
    for i in range(attempts):
        _terminate(cur, old)
        try:
            cur.execute(sql.SQL('ALTER DATABASE {} RENAME TO {}').format(sql.Identifier(old), sql.Identifier(new)))
            return
        except Exception as e:  # pylint: disable=broad-except
            if 'is being accessed by other users' not in str(e) or i == attempts - 1:
                raise
            time.sleep(0.2)


def restore(params, connect, targets_spec, cluster, tenant, restore_as=None, restore_from='latest', owner=None,
            pg_bin=PG_BIN, work_dir=None, now=None, check_mode=False):
    """Restore a tenant's dump to its own name (the current database kept aside) or a new name."""
    check_cluster(cluster)
    check_name(tenant)
    dest = check_name(restore_as, 'restore_as') if restore_as else tenant
    if not os.access(os.path.join(pg_bin, 'pg_restore'), os.X_OK):
        raise DumpError('pg_restore not found in %s: install postgresql-client-15 or set pg_bin' % pg_bin)
    targets = open_targets(targets_spec, write=False, cluster=cluster)
    target, manifest = find_dump(targets, cluster, tenant, restore_from)
    if manifest.get('tenant') != tenant:
        raise DumpError('the manifest of %s names tenant %r, not %r' % (manifest.get('key'), manifest.get('tenant'), tenant))
    work_dir = work_dir or tempfile.gettempdir()
    if not os.path.isdir(work_dir):
        raise DumpError('work_dir %s does not exist' % work_dir)
    path = download_verified(target, manifest, work_dir)   # before any database is touched
    ts = utc_timestamp(now)
    tmp_db = dest + RESTORING_SUFFIX
    aside = dest + ASIDE_INFIX + ts
    result = dict(changed=not check_mode, tenant=tenant, database=dest, source=location(target, manifest['key']),
                  dump=dict((k, manifest.get(k)) for k in ('timestamp', 'kind', 'sha256', 'size', 'node', 'datoid')),
                  verified=True, aside=None, statements=[])
    conn = None
    try:
        conn = connect(None)
        cur = conn.cursor()
        cur.execute('SELECT pg_catalog.pg_is_in_recovery()')
        if cur.fetchone()[0]:
            raise DumpError('a restore runs on the primary: this node is a replica')
        dbs = read_databases(cur, [dest, tmp_db])
        current = dbs.get(dest)
        if restore_as and current is not None:
            raise DumpError('database %r exists: restore to a new name that is free, or restore %r onto its own name'
                            % (dest, tenant))
        owner = owner or (current or {}).get('owner') or manifest.get('owner')
        cur.execute('SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s', (owner,))
        if not cur.fetchone():
            raise DumpError('role %r (the owner) does not exist: onboard the tenant\'s group first' % owner)
        if check_mode:
            result['aside'] = aside if current is not None else None
            return result

        def run(query, label=None):
            cur.execute(query)
            result['statements'].append(label or query.as_string(cur))

        if tmp_db in dbs:  # left by an interrupted restore: never a tenant (names have no "__")
            run(sql.SQL('DROP DATABASE {} WITH (FORCE)').format(sql.Identifier(tmp_db)))
        ident = sql.Identifier(tmp_db)
        run(sql.SQL('CREATE DATABASE {} OWNER {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}').format(
            ident, sql.Identifier(owner), sql.Literal(manifest.get('encoding') or 'UTF8'),
            sql.Literal(manifest.get('collate') or 'C.UTF-8'), sql.Literal(manifest.get('ctype') or 'C.UTF-8')))
        try:
            run(sql.SQL('REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC').format(ident))
            argv = [os.path.join(pg_bin, 'pg_restore'), '--exit-on-error', '--no-acl', '--exclude-schema=pgbouncer',
                    '--single-transaction'] + pg_conn_args(params) + ['--dbname', tmp_db]
            if owner != manifest.get('owner'):
                argv[1:1] = ['--no-owner', '--role=%s' % owner]
            argv.append(path)
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env=pg_env(params), check=False)
            result['statements'].append('pg_restore into %s from %s' % (tmp_db, result['source']))
            if proc.returncode != 0:
                raise DumpError('pg_restore failed (exit %d): %s' % (
                    proc.returncode, proc.stderr.decode('utf-8', 'replace')[-STDERR_TAIL:].strip()))
            if current is not None:
                _copy_database_settings(cur, dest, tmp_db, current, run)
        except BaseException:
            try:
                cur.execute(sql.SQL('DROP DATABASE IF EXISTS {} WITH (FORCE)').format(ident))
                result['statements'].append('DROP DATABASE "%s" WITH (FORCE) (the failed restore)' % tmp_db)
            except Exception:  # pylint: disable=broad-except
                pass
            raise
        if current is not None:
            if not current['allow_connections']:
                _rename(cur, dest, aside)
            else:
                run(sql.SQL('ALTER DATABASE {} ALLOW_CONNECTIONS false').format(sql.Identifier(dest)))
                try:
                    _rename(cur, dest, aside)
                except Exception:
                    cur.execute(sql.SQL('ALTER DATABASE {} ALLOW_CONNECTIONS true').format(sql.Identifier(dest)))
                    raise
                run(sql.SQL('ALTER DATABASE {} ALLOW_CONNECTIONS true').format(sql.Identifier(aside)))
            result['statements'].append('ALTER DATABASE "%s" RENAME TO "%s"' % (dest, aside))
            result['aside'] = aside
            run(sql.SQL('COMMENT ON DATABASE {} IS {}').format(sql.Identifier(aside), sql.Literal(
                'dine360: %s before the restore of %s; drop it when the restore is accepted' % (dest, ts))))
        try:
            _rename(cur, tmp_db, dest)
        except Exception:
            if current is not None:
                _rename(cur, aside, dest)
                result['aside'] = None
            raise
        result['statements'].append('ALTER DATABASE "%s" RENAME TO "%s"' % (tmp_db, dest))
        cur.execute('SELECT oid FROM pg_catalog.pg_database WHERE datname = %s', (dest,))
        result['datoid'] = cur.fetchone()[0]
        return result
    finally:
        if conn is not None:
            conn.close()
        os.unlink(path)


def _copy_database_settings(cur, dest, tmp_db, current, run):
    """The current database's connection limit, settings, CONNECT grants and state, onto the restored one."""
    ident = sql.Identifier(tmp_db)
    run(sql.SQL('ALTER DATABASE {} CONNECTION LIMIT {}').format(ident, sql.Literal(current['connection_limit'])))
    cur.execute("SELECT s.setconfig FROM pg_catalog.pg_db_role_setting s JOIN pg_catalog.pg_database d"
                " ON d.oid = s.setdatabase WHERE s.setrole = 0 AND d.datname = %s", (dest,))
    row = cur.fetchone()
    for item in (row[0] if row else None) or []:
        key, value = item.split('=', 1)
        run(sql.SQL('ALTER DATABASE {} SET {} = {}').format(ident, sql.Identifier(key), sql.Literal(value)))
    cur.execute("SELECT DISTINCT pg_catalog.pg_get_userbyid(a.grantee) FROM pg_catalog.pg_database d"
                " CROSS JOIN LATERAL pg_catalog.aclexplode(coalesce(d.datacl, pg_catalog.acldefault('d', d.datdba))) a"
                " WHERE d.datname = %s AND a.privilege_type = 'CONNECT' AND a.grantee <> 0 AND a.grantee <> d.datdba",
                (dest,))
    for (grantee,) in cur.fetchall():
        run(sql.SQL('GRANT CONNECT ON DATABASE {} TO {}').format(ident, sql.Identifier(grantee)))
    if not current['allow_connections']:
        run(sql.SQL('ALTER DATABASE {} ALLOW_CONNECTIONS false').format(ident))


# --------------------------------------------------------------------------- expire

def expire(targets_spec, cluster, retention_days, default_retention_days, now=None, check_mode=False):
    """Delete dumps older than their tenant's retention.

    Kept always: the newest complete dump of every tenant, every ``final`` dump. Dumps
    without a manifest (an interrupted run) older than a day are removed. Globals dumps
    are kept as long as the longest retention, the newest always.
    """
    check_cluster(cluster)
    now = now or datetime.datetime.now(datetime.timezone.utc)
    retention = dict((check_name(n), int(d)) for n, d in (retention_days or {}).items())
    if any(d < 1 for d in retention.values()) or int(default_retention_days) < 1:
        raise DumpError('retention days must be at least 1')
    longest = max(list(retention.values()) + [int(default_retention_days)])
    targets = open_targets(targets_spec, write=not check_mode, cluster=cluster)
    deleted, kept = [], {}
    for target in targets:
        doomed = []
        for name in list_tenants(target, cluster):
            days = retention.get(name, int(default_retention_days))
            cutoff = now - datetime.timedelta(days=days)
            entries = list_dumps(target, cluster, name)
            complete = [e for e in entries if e['dump'] and e['manifest']]
            newest = complete[-1]['key'] if complete else None
            gone = 0
            for e in entries:
                taken = parse_timestamp(e['timestamp'])
                if e['key'] == newest or e['kind'] == 'final':
                    continue
                if not (e['dump'] and e['manifest']):
                    if taken < now - datetime.timedelta(days=1):
                        doomed.append(e['key'])
                elif taken < cutoff:
                    doomed.append(e['key'])
                    gone += 1
            kept[name] = len(complete) - gone
        gprefix = '%s/dumps/%s/' % (cluster, GLOBALS)
        stamps = sorted(set(k[len(gprefix):].rsplit('.', 1)[0] for k in target.list(gprefix)))
        for ts in stamps[:-1]:
            if TS_RE.match(ts) and parse_timestamp(ts) < now - datetime.timedelta(days=longest):
                doomed.append(gprefix + ts + '.sql')
        for key in doomed:
            for k in (key, manifest_key(key)):
                if not check_mode:
                    target.delete(k)
            deleted.append(location(target, key))
    return dict(changed=bool(deleted), deleted=deleted, kept=kept)
