# -*- coding: utf-8 -*-
# Copyright: (c) 2026, dine360.saas engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""dine360-backup: WAL archiving, base backups, retention, restore and restore drills.

The dine360.saas.backup role installs this file as /usr/local/bin/dine360-backup (with
``#!/usr/bin/python3`` as its first line; the collection's copy has none, as
ansible-test's sanity rules ask) and the collection's module_utils/backup_store.py
beside it as /usr/local/lib/dine360/dine360_backup_store.py. Settings come from a JSON
file (``--config``, default /etc/dine360/backup.json, written by the role):

  cluster            key prefix in every target (the Patroni scope)
  targets            list of target specs (type path|s3, see backup_store.make_target)
  compression        zstd (default), lz4 or none; compression_level
  pg_bin, data_dir, pg_port, socket_dir
  patroni_url        this node's Patroni REST API (http://address:8008)
  superuser, superuser_password   to ask the primary for a WAL switch after a base backup
  staging_dir        local space for a base backup before upload
  retention_count, retention_days   base backup retention
  wal_wait_seconds   how long a base backup waits for its last WAL segment to be archived
  textfile_dir       node_exporter's textfile directory (metrics), '' to disable
  node               this node's inventory name

Subcommands (``dine360-backup -h``):

  wal-push PATH NAME    archive_command = 'dine360-backup wal-push %p %f'
  wal-get NAME DEST     restore_command = 'dine360-backup wal-get %f %p'
  base-backup           pg_basebackup from a replica (the first healthy one by name;
                        other nodes skip) to every target, then retention
  expire                apply retention to base backups and WAL
  list                  the complete base backups as JSON
  wal-list              the archived WAL file names, as JSON
  check                 every target reachable and writable (exit 3 otherwise)
  restore               fetch a base backup into a new data directory, verified
  drill                 restore the newest backup into a scratch instance, replay the
                        archive to its end, run checks and record the result

Exit codes follow PostgreSQL's archive_command contract: 0 only once a segment is
durably stored in every target (or an identical copy is already there), and failures
below 125 so PostgreSQL retries instead of stopping its archiver.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import datetime
import io
import json
import os
import signal
import sys
import time


class _LazyModule(object):
    """A module imported on first use. PostgreSQL starts this command once per WAL file
    (wal-push, wal-get), which needs none of these: importing them would cost every call."""

    def __init__(self, name):
        self._name = name

    def __getattr__(self, attr):
        module = __import__(self._name)
        globals()[self._name] = module
        return getattr(module, attr)


argparse = _LazyModule('argparse')
shutil = _LazyModule('shutil')
subprocess = _LazyModule('subprocess')
tarfile = _LazyModule('tarfile')
tempfile = _LazyModule('tempfile')

try:
    from ansible_collections.dine360.saas.plugins.module_utils import backup_store as store
except ImportError:  # installed on a node: the store module sits in /usr/local/lib/dine360
    sys.path[:0] = ['/usr/local/lib/dine360', os.path.dirname(os.path.realpath(__file__))]
    import dine360_backup_store as store  # pylint: disable=import-error

CONFIG = '/etc/dine360/backup.json'
SEGMENT_SIZE = 16 * 1024 * 1024
DEFAULTS = {
    'cluster': 'dine360-main',
    'targets': [],
    'compression': 'zstd',
    'compression_level': 1,
    'pg_bin': '/usr/lib/postgresql/15/bin',
    'data_dir': '/var/lib/postgresql/15/data',
    'pg_port': 5432,
    'socket_dir': '/var/run/postgresql',
    'patroni_url': 'http://127.0.0.1:8008',
    'superuser': 'postgres',
    'superuser_password': '',
    'staging_dir': '/var/lib/dine360/backup/staging',
    'retention_count': 2,
    'retention_days': 7,
    'wal_wait_seconds': 300,
    'textfile_dir': '',
    'node': os.uname()[1],  # socket.gethostname() without importing socket
    'scratch_port': 5499,
    'scratch_dir': '/var/lib/dine360/backup/scratch',
}


def log(msg):
    sys.stderr.write('dine360-backup: %s\n' % msg)
    sys.stderr.flush()


def load_config(path):
    cfg = dict(DEFAULTS)
    try:
        with open(path) as f:
            cfg.update(json.load(f))
    except (OSError, ValueError) as e:
        raise store.BackupError('cannot read the configuration %s: %s' % (path, e))
    if not cfg['targets']:
        raise store.BackupError('no backup targets in %s (set backup_targets)' % path)
    return cfg


def targets(cfg):
    return [store.make_target(t) for t in cfg['targets']]


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def iso(ts):
    return ts.strftime('%Y-%m-%dT%H:%M:%SZ')


def parse_time(text):
    """An ISO 8601 time; naive times are UTC."""
    t = text.strip().replace(' ', 'T')
    if t.endswith('Z'):
        t = t[:-1] + '+00:00'
    try:
        value = datetime.datetime.fromisoformat(t)
    except ValueError:
        raise store.BackupError('cannot parse the time %r: use ISO 8601, e.g. 2026-11-21T15:04:05Z' % text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    return value


# --- WAL names and LSNs ------------------------------------------------------------------

def parse_lsn(text):
    hi, lo = text.split('/')
    return (int(hi, 16) << 32) | int(lo, 16)


def segment_name(timeline, lsn):
    segno = lsn // SEGMENT_SIZE
    per_id = 0x100000000 // SEGMENT_SIZE
    return '%08X%08X%08X' % (timeline, segno // per_id, segno % per_id)


def segment_number(name):
    """(log * segments-per-id + seg) of a segment-like name (segments, .partial, .backup)."""
    per_id = 0x100000000 // SEGMENT_SIZE
    return int(name[8:16], 16) * per_id + int(name[16:24], 16)


def is_segment_like(name):
    return len(name) >= 24 and all(c in '0123456789ABCDEF' for c in name[:24])


def wal_key(cfg, name):
    return '%s/wal/%s' % (cfg['cluster'], name)


# --- metrics --------------------------------------------------------------------------

def write_metric(cfg, kind, ok=True, extra=None):
    """node_exporter textfile: dine360_backup_last_success_timestamp_seconds{kind=...}."""
    directory = cfg.get('textfile_dir')
    if not directory or not os.path.isdir(directory):
        return
    path = os.path.join(directory, 'dine360_backup_%s.prom' % kind)
    previous = {}
    try:
        with open(path) as f:
            for line in f:
                if line and not line.startswith('#'):
                    name, value = line.rsplit(' ', 1)
                    previous[name] = value.strip()
    except (OSError, ValueError):
        pass
    now = '%d' % time.time()
    labels = '{kind="%s"}' % kind  # the alerts add the Patroni scope from the member's instance
    if ok:
        previous['dine360_backup_last_success_timestamp_seconds' + labels] = now
    else:
        previous['dine360_backup_last_failure_timestamp_seconds' + labels] = now
    for key, value in (extra or {}).items():
        previous['dine360_backup_%s%s' % (key, labels)] = str(value)
    body = ''.join('%s %s\n' % (k, v) for k, v in sorted(previous.items())).encode()
    try:
        fd, tmp = tempfile.mkstemp(prefix='.dine360_backup_', dir=directory)
        with os.fdopen(fd, 'wb') as f:
            f.write(body)
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)
        return
    except OSError:
        pass
    # The directory is root's and the command runs as postgres: the role created the file
    # for us; rewrite it in place with one write.
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, body)
        finally:
            os.close(fd)
    except OSError as e:
        log('could not write metrics to %s: %s' % (path, e))


# --- WAL archive ------------------------------------------------------------------------

def wal_push(cfg, path, name):
    with open(path, 'rb') as f:
        data = _map_file(f)
        try:
            blob, header = store.encode_wal(data, name, cfg['compression'], cfg.get('compression_level'))
        finally:
            if not isinstance(data, bytes):
                data.close()
    for target in targets(cfg):
        key = wal_key(cfg, name)
        try:
            target.put(key, io.BytesIO(blob))
        except store.ObjectExists:
            existing = store.parse_header(target.read_head(key))
            if existing.get('sha256') != header['sha256'] or existing.get('size') != header['size']:
                raise store.ConflictError(
                    '%s already exists in %s with different contents (sha256 %s, here %s): refusing to '
                    'overwrite it. Another cluster may be archiving under the same name: check backup_cluster_name.'
                    % (name, target.describe(), existing.get('sha256'), header['sha256']))
    write_metric(cfg, 'wal_archive')
    return 0


def _map_file(f):
    """The contents of an open file, mapped read-only rather than copied (hashing and
    compressing read the page cache directly); read into memory when it cannot be mapped
    (an empty file)."""
    import mmap
    try:
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (ValueError, OSError):
        return f.read()


def wal_get(cfg, name, dest):
    errors = []
    for target in targets(cfg):
        try:
            with target.get(wal_key(cfg, name)) as body:
                blob = body.read()
            data = store.decode_wal(blob)
        except store.NotFoundError:
            continue
        except store.BackupError as e:
            errors.append('%s: %s' % (target.describe(), e))
            continue
        # Written under a temporary name and renamed, so PostgreSQL never sees a partial file,
        # but not fsynced: after a crash recovery asks the restore_command again rather than
        # trusting a restored file (pgBackRest's archive-get skips the sync for the same reason).
        tmp = dest + '.dine360-tmp'
        with open(tmp, 'wb') as f:
            f.write(data)
        os.rename(tmp, dest)
        return 0
    if errors:
        for e in errors:
            log(e)
        return store.ChecksumError.exit_code
    return 1  # not archived (yet): PostgreSQL asks for files that may not exist


# --- base backups ---------------------------------------------------------------------

def patroni(cfg, path):
    import urllib.request
    with urllib.request.urlopen(cfg['patroni_url'].rstrip('/') + path, timeout=5) as r:
        return json.loads(r.read().decode())


def designated_node(cfg):
    """The member that takes base backups: the first streaming replica by name, else the leader.
    Without Patroni (patroni_url empty: a standalone server) it is this node."""
    if not cfg.get('patroni_url'):
        return cfg['node'], []
    members = patroni(cfg, '/cluster').get('members', [])
    replicas = sorted(m['name'] for m in members
                      if m.get('role') in ('replica', 'sync_standby') and m.get('state') in ('running', 'streaming'))
    if replicas:
        return replicas[0], members
    leaders = [m['name'] for m in members if m.get('role') == 'leader']
    return (leaders[0] if leaders else None), members


def list_backups(cfg, target):
    backups = []
    prefix = '%s/base/' % cfg['cluster']
    for key in target.list(prefix):
        if key.endswith('/dine360.json'):
            with target.get(key) as f:
                backups.append(json.loads(f.read().decode()))
    return sorted(backups, key=lambda b: b['id'])


def switch_wal_on_primary(cfg, members):
    """Close the current segment on the primary so the backup's last WAL gets archived."""
    leader = [m for m in members if m.get('role') == 'leader']
    if not leader or not cfg.get('superuser_password'):
        return
    try:
        import psycopg2
        conn = psycopg2.connect(host=leader[0]['host'], port=leader[0].get('port', 5432), user=cfg['superuser'],
                                password=cfg['superuser_password'], dbname='postgres', connect_timeout=5,
                                application_name='dine360-backup')
        conn.autocommit = True
        conn.cursor().execute('SELECT pg_catalog.pg_switch_wal()')
        conn.close()
    except Exception as e:  # pylint: disable=broad-except
        log('could not ask the primary for a WAL switch (%s); waiting for archive_timeout' % e)


def base_backup(cfg, force=False, expire_after=True):
    chosen, members = designated_node(cfg)
    if not force and chosen != cfg['node']:
        log('%s takes the base backups (a healthy replica); nothing to do on %s' % (chosen, cfg['node']))
        return 0
    tlist = targets(cfg)
    for t in tlist:
        t.check(write=True, under=cfg['cluster'])
    started = utcnow()
    backup_id = started.strftime('%Y%m%dT%H%M%SZ')
    os.makedirs(cfg['staging_dir'], exist_ok=True)
    staging = tempfile.mkdtemp(prefix=backup_id + '.', dir=cfg['staging_dir'])
    try:
        cmd = [os.path.join(cfg['pg_bin'], 'pg_basebackup'), '-h', cfg['socket_dir'], '-p', str(cfg['pg_port']),
               '-U', cfg['superuser'], '-D', staging, '-Ft', '-X', 'none', '-c', 'fast', '--no-password',
               '--compress=client-zstd:level=3', '-l', 'dine360 %s' % backup_id]
        run = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
        if run.returncode != 0:
            raise store.BackupError('pg_basebackup failed (%d): %s' % (run.returncode, run.stderr.decode(errors='replace').strip()))
        with open(os.path.join(staging, 'backup_manifest')) as f:
            manifest = json.load(f)
        ranges = manifest['WAL-Ranges']
        timeline = ranges[-1]['Timeline']
        start_lsn, end_lsn = ranges[0]['Start-LSN'], ranges[-1]['End-LSN']
        start_wal = segment_name(ranges[0]['Timeline'], parse_lsn(start_lsn))
        end_wal = segment_name(timeline, max(parse_lsn(end_lsn) - 1, parse_lsn(start_lsn)))
        # The backup is only usable once its last WAL segment is in the archive.
        switch_wal_on_primary(cfg, members)
        deadline = time.time() + cfg['wal_wait_seconds']
        while not all(t.size(wal_key(cfg, end_wal)) is not None for t in tlist):
            if time.time() > deadline:
                raise store.BackupError('WAL segment %s (the end of base backup %s) was not archived within %d s: '
                                        'check archive_command (pg_stat_archiver)' % (end_wal, backup_id, cfg['wal_wait_seconds']))
            time.sleep(1)
        files = {}
        for name in sorted(os.listdir(staging)):
            files[name] = dict(zip(('sha256', 'size'), store.sha256_file(os.path.join(staging, name))))
        sysid = _controldata(cfg).get('Database system identifier', '')
        role = next((m.get('role') for m in members if m.get('name') == cfg['node']), 'standalone')
        info = {'id': backup_id, 'cluster': cfg['cluster'], 'node': cfg['node'], 'node_role': role,
                'start_time': iso(started),
                'stop_time': iso(utcnow()), 'timeline': timeline, 'start_lsn': start_lsn, 'end_lsn': end_lsn,
                'start_wal': start_wal, 'end_wal': end_wal, 'files': files, 'system_identifier': sysid,
                'pg_version': _pg_version(cfg)}
        blob = json.dumps(info, indent=1, sort_keys=True).encode()
        for t in tlist:
            for name in sorted(files):
                with open(os.path.join(staging, name), 'rb') as f:
                    t.put('%s/base/%s/%s' % (cfg['cluster'], backup_id, name), f)
            t.put('%s/base/%s/dine360.json' % (cfg['cluster'], backup_id), io.BytesIO(blob))  # last: marks it complete
    except store.BackupError:
        write_metric(cfg, 'basebackup', ok=False)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    size = sum(f['size'] for f in files.values())
    write_metric(cfg, 'basebackup', extra={'size_bytes': size})
    print(json.dumps({'backup': backup_id, 'size': size, 'end_wal': end_wal, 'targets': [t.describe() for t in tlist]}))
    if expire_after:
        expire(cfg)
    return 0


def _controldata(cfg):
    run = subprocess.run([os.path.join(cfg['pg_bin'], 'pg_controldata'), cfg['data_dir']],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, check=False,
                         env=dict(os.environ, LC_ALL='C'))
    out = {}
    for line in run.stdout.decode(errors='replace').splitlines():
        if ':' in line:
            k, v = line.split(':', 1)
            out[k.strip()] = v.strip()
    return out


def _pg_version(cfg):
    try:
        with open(os.path.join(cfg['data_dir'], 'PG_VERSION')) as f:
            return f.read().strip()
    except OSError:
        return ''


def expire(cfg, now=None):
    """Keep the newest retention_count backups and every backup younger than retention_days;
    delete older backups, the WAL that only they needed, and incomplete backups older than a day."""
    now = now or utcnow()
    report = []
    for t in targets(cfg):
        backups = list_backups(cfg, t)
        horizon = now - datetime.timedelta(days=cfg['retention_days'])
        keep = [b for i, b in enumerate(backups)
                if i >= len(backups) - max(int(cfg['retention_count']), 1) or parse_time(b['stop_time']) > horizon]
        drop = [b for b in backups if b not in keep]
        for b in drop:
            for key in t.list('%s/base/%s/' % (cfg['cluster'], b['id'])):
                if not key.endswith('/dine360.json'):
                    t.delete(key)
            t.delete('%s/base/%s/dine360.json' % (cfg['cluster'], b['id']))
        complete = set(b['id'] for b in backups)
        stale = parse_time(iso(now - datetime.timedelta(days=1)))
        for key in t.list('%s/base/' % cfg['cluster']):
            bid = key.split('/')[-2]
            if bid not in complete:
                try:
                    born = datetime.datetime.strptime(bid, '%Y%m%dT%H%M%SZ').replace(tzinfo=datetime.timezone.utc)
                except ValueError:
                    continue
                if born < stale:
                    t.delete(key)
        wal_deleted = 0
        if keep:
            oldest = min(segment_number(b['start_wal']) for b in keep)
            for key in t.list('%s/wal/' % cfg['cluster']):
                name = key.rsplit('/', 1)[-1]
                if is_segment_like(name) and segment_number(name) < oldest:
                    t.delete(key)
                    wal_deleted += 1
        report.append({'target': t.describe(), 'kept': [b['id'] for b in keep], 'deleted': [b['id'] for b in drop],
                       'wal_deleted': wal_deleted})
    print(json.dumps({'expire': report}))
    return 0


# --- restore --------------------------------------------------------------------------

def choose_backup(cfg, backup_id=None, target_time=None, target_lsn=None):
    """(target, backup info) for the request; a clear error when none can serve it."""
    tlist = targets(cfg)
    seen = []
    for t in tlist:
        try:
            t.check(write=False)
        except store.BackupError as e:
            log('skipping %s: %s' % (t.describe(), e))
            continue
        backups = list_backups(cfg, t)
        seen.extend(backups)
        if backup_id and backup_id != 'latest':
            candidates = [b for b in backups if b['id'] == backup_id]
        elif target_time is not None:
            candidates = [b for b in backups if parse_time(b['stop_time']) <= target_time]
        elif target_lsn is not None:
            candidates = [b for b in backups if parse_lsn(b['end_lsn']) <= target_lsn]
        else:
            candidates = backups
        if candidates:
            return t, candidates[-1]
    if not seen:
        raise store.BackupError('no complete base backup of cluster %s in %s' % (
            cfg['cluster'], ', '.join(t.describe() for t in tlist)))
    oldest = min(seen, key=lambda b: b['id'])
    if backup_id and backup_id != 'latest':
        raise store.BackupError('base backup %s not found; there are %s' % (backup_id, ', '.join(sorted(set(b['id'] for b in seen)))))
    if target_time is not None:
        raise store.BackupError('the target time %s is before the oldest base backup (%s, consistent from %s): '
                                'pick a later time' % (iso(target_time), oldest['id'], oldest['stop_time']))
    raise store.BackupError('the target LSN is before the end of the oldest base backup (%s, %s)' % (oldest['id'], oldest['end_lsn']))


def restore(cfg, data_dir, backup_id=None, target_time=None, target_lsn=None, target_name=None,
            target_action='promote', recovery_conf=False, dry_run=False):
    if sum(x is not None for x in (target_time, target_lsn, target_name)) > 1:
        raise store.BackupError('give at most one of --target-time, --target-lsn and --target-name')
    lsn = parse_lsn(target_lsn) if target_lsn else None
    ttime = parse_time(target_time) if target_time else None
    target, info = choose_backup(cfg, backup_id, ttime, lsn)
    if os.path.exists(data_dir) and os.listdir(data_dir):
        raise store.BackupError('the data directory %s is not empty: move it aside first (nothing was changed)' % data_dir)
    if dry_run:
        print(json.dumps({'backup': info['id'], 'target': target.describe(), 'stop_time': info['stop_time']}))
        return 0
    parent = os.path.dirname(os.path.abspath(data_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='.%s.restoring.' % os.path.basename(data_dir), dir=parent)
    try:
        os.chmod(tmp, 0o700)
        base = '%s/base/%s/' % (cfg['cluster'], info['id'])
        tar_name = [n for n in info['files'] if n.startswith('base.tar')][0]
        import zstandard
        with target.get(base + tar_name) as raw:
            hashed = store.HashingReader(raw)
            with zstandard.ZstdDecompressor().stream_reader(hashed) as plain:
                with tarfile.open(fileobj=plain, mode='r|') as tar:
                    for member in tar:
                        if member.name.startswith('/') or '..' in member.name.split('/'):
                            raise store.BackupError('unsafe path %r in %s' % (member.name, tar_name))
                        tar.extract(member, tmp, set_attrs=True)
            while hashed.read(store.CHUNK):
                pass
        if hashed.hexdigest() != info['files'][tar_name]['sha256']:
            raise store.ChecksumError('%s of backup %s: checksum mismatch (stored %s, read %s)'
                                      % (tar_name, info['id'], info['files'][tar_name]['sha256'], hashed.hexdigest()))
        with target.get(base + 'backup_manifest') as raw, open(os.path.join(tmp, 'backup_manifest.dine360'), 'wb') as out:
            shutil.copyfileobj(raw, out)
        verify = subprocess.run([os.path.join(cfg['pg_bin'], 'pg_verifybackup'), '--no-parse-wal', '--quiet',
                                 '-m', os.path.join(tmp, 'backup_manifest.dine360'), '-i', 'backup_manifest.dine360', tmp],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
        if verify.returncode != 0:
            raise store.ChecksumError('pg_verifybackup rejected backup %s: %s' % (info['id'], verify.stderr.decode(errors='replace').strip()))
        os.unlink(os.path.join(tmp, 'backup_manifest.dine360'))
        for stale in ('postmaster.pid', 'postmaster.opts', 'standby.signal'):
            if os.path.exists(os.path.join(tmp, stale)):
                os.unlink(os.path.join(tmp, stale))
        if recovery_conf:
            lines = ["restore_command = '%s wal-get %%f %%p'" % _self_command(cfg),
                     "recovery_target_timeline = 'latest'"]
            if ttime is not None:
                lines.append("recovery_target_time = '%s'" % ttime.astimezone(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M:%S.%f+00'))
            elif lsn is not None:
                lines.append("recovery_target_lsn = '%s'" % target_lsn)
            elif target_name:
                lines.append("recovery_target_name = '%s'" % target_name.replace("'", "''"))
            if ttime is not None or lsn is not None or target_name:
                lines.append("recovery_target_action = '%s'" % target_action)
            with open(os.path.join(tmp, 'postgresql.auto.conf'), 'a') as f:
                f.write('# dine360-backup restore of %s\n%s\n' % (info['id'], '\n'.join(lines)))
            open(os.path.join(tmp, 'recovery.signal'), 'w').close()
        if os.path.isdir(data_dir):
            os.rmdir(data_dir)
        os.rename(tmp, data_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(json.dumps({'restored': info['id'], 'data_dir': data_dir, 'target': target.describe(),
                      'stop_time': info['stop_time']}))
    return 0


def _self_command(cfg):
    return '%s %s --config %s' % (sys.executable, os.path.realpath(sys.argv[0]), cfg['_config_path'])


# --- restore drill --------------------------------------------------------------------

def drill(cfg, scratch_dir, keep=False, force=False):
    """Restore the newest backup into a scratch instance, replay every archived WAL, check, record."""
    if not force:
        chosen, dummy = designated_node(cfg)
        if chosen != cfg['node']:
            log('%s runs the restore drills; nothing to do on %s' % (chosen, cfg['node']))
            return 0
    scratch_dir = scratch_dir or os.path.join(cfg['scratch_dir'], 'drill')
    started = time.time()
    data_dir = os.path.join(scratch_dir, 'data')
    if os.path.exists(data_dir):
        shutil.rmtree(data_dir)
    result = {'started': iso(utcnow()), 'node': cfg['node'], 'ok': False}
    sock = os.path.join(scratch_dir, 'sock')
    pg_ctl = os.path.join(cfg['pg_bin'], 'pg_ctl')
    try:
        restore(cfg, data_dir, recovery_conf=True)
        dummy, info = choose_backup(cfg)
        result['backup'] = info['id']
        start_scratch(cfg, scratch_dir)
        dbs = _psql(cfg, sock, "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database "
                               "WHERE datallowconn AND NOT datistemplate").split(',')
        checks = {}
        for db in dbs:
            checks[db] = int(_psql(cfg, sock, "SELECT count(*) FROM pg_catalog.pg_class WHERE relkind = 'r'", db))
        result.update({'ok': True, 'databases': len(dbs), 'tables': checks,
                       'timeline': int(_psql(cfg, sock, 'SELECT timeline_id FROM pg_catalog.pg_control_checkpoint()')),
                       'replayed_to': _last_replayed(scratch_dir)})
    except Exception as e:  # pylint: disable=broad-except
        result['error'] = str(e)
    finally:
        subprocess.run([pg_ctl, '-D', data_dir, '-m', 'fast', 'stop'], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)
        result['seconds'] = round(time.time() - started, 1)
        if not keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    blob = json.dumps(result, indent=1, sort_keys=True).encode()
    for t in targets(cfg):
        try:
            t.put('%s/drills/%s.json' % (cfg['cluster'], utcnow().strftime('%Y%m%dT%H%M%SZ')), io.BytesIO(blob))
        except (store.BackupError, store.ObjectExists) as e:
            log('could not record the drill in %s: %s' % (t.describe(), e))
    write_metric(cfg, 'restore_drill', ok=result['ok'], extra={'duration_seconds': result['seconds']})
    print(json.dumps(result, sort_keys=True))
    return 0 if result['ok'] else 1


def start_scratch(cfg, scratch_dir, timeout=3600):
    """Start a restored data directory as a scratch instance that cannot touch the cluster
    (no TCP listener, no archiving, no replication) and wait until recovery has ended."""
    data_dir = os.path.join(scratch_dir, 'data')
    sock = os.path.join(scratch_dir, 'sock')
    os.makedirs(sock, exist_ok=True)
    opts = ("-c port=%d -c listen_addresses='' -c unix_socket_directories=%s -c archive_mode=off "
            "-c archive_command='' -c synchronous_standby_names='' -c primary_conninfo='' -c primary_slot_name='' "
            "-c hba_file=%s/pg_hba.conf -c ident_file=%s/pg_ident.conf -c hot_standby=on "
            "-c shared_buffers=128MB -c cluster_name=dine360-scratch"
            % (cfg['scratch_port'], sock, data_dir, data_dir))
    with open(os.path.join(data_dir, 'pg_hba.conf'), 'w') as f:
        f.write('local all all peer\n')
    open(os.path.join(data_dir, 'pg_ident.conf'), 'a').close()
    log_file = os.path.join(scratch_dir, 'postgres.log')
    run = subprocess.run([os.path.join(cfg['pg_bin'], 'pg_ctl'), '-D', data_dir, '-o', opts, '-l', log_file,
                          '-w', '-t', str(timeout), 'start'], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    if run.returncode != 0:
        raise store.BackupError('the scratch instance did not start: %s' % _tail(log_file))
    # Recovery replays to the target (or, without one, until the archive has no next
    # segment), then promotes.
    deadline = time.time() + timeout
    while _psql(cfg, sock, 'SELECT pg_catalog.pg_is_in_recovery()') != 'f':
        if time.time() > deadline:
            raise store.BackupError('recovery did not finish within %d s: %s' % (timeout, _tail(log_file)))
        if subprocess.run([os.path.join(cfg['pg_bin'], 'pg_ctl'), '-D', data_dir, 'status'],
                          stdout=subprocess.DEVNULL, check=False).returncode != 0:
            raise store.BackupError('the scratch instance stopped during recovery: %s' % _tail(log_file))
        time.sleep(1)
    return sock


def _last_replayed(scratch_dir):
    """The last WAL file recovery restored, from the scratch instance's log."""
    last = ''
    try:
        with open(os.path.join(scratch_dir, 'postgres.log'), errors='replace') as f:
            for line in f:
                if 'restored log file' in line and '.history' not in line:
                    last = line.split('"')[1]
    except (OSError, IndexError):
        pass
    return last


def _tail(path, n=20):
    try:
        with open(path, errors='replace') as f:
            return ''.join(f.readlines()[-n:])
    except OSError:
        return '(no log)'


def _psql(cfg, sock, sql, db='postgres'):
    run = subprocess.run([os.path.join(cfg['pg_bin'], 'psql'), '-h', sock, '-p', str(cfg['scratch_port']), '-d', db,
                          '-XAtc', sql], stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    if run.returncode != 0:
        raise store.BackupError('query on the scratch instance failed: %s' % run.stderr.decode(errors='replace').strip())
    return run.stdout.decode().strip()


# --- command line ---------------------------------------------------------------------

def _wal_argv(argv):
    """The arguments of the two commands PostgreSQL runs once per WAL file (``[--config FILE]
    wal-push|wal-get A B``) without building the argparse parser; None for anything else."""
    args = list(sys.argv[1:] if argv is None else argv)
    config = os.environ.get('DINE360_BACKUP_CONFIG', CONFIG)
    if len(args) == 5 and args[0] == '--config':
        config = args[1]
        args = args[2:]
    elif len(args) == 4 and args[0].startswith('--config='):
        config = args[0][len('--config='):]
        args = args[1:]
    if len(args) != 3 or args[0] not in ('wal-push', 'wal-get') or any(a.startswith('-') for a in args[1:]):
        return None
    if args[0] == 'wal-push':
        return _Args(config=config, cmd=args[0], path=args[1], name=args[2])
    return _Args(config=config, cmd=args[0], name=args[1], dest=args[2])


class _Args(object):
    def __init__(self, **kw):
        self.__dict__.update(kw)


def main(argv=None):
    args = _wal_argv(argv)
    if args is None:
        args = _parse_args(argv)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    return _run(args)


def _parse_args(argv):
    p = argparse.ArgumentParser(prog='dine360-backup', description=__doc__.split('\n\n', maxsplit=1)[0])
    p.add_argument('--config', default=os.environ.get('DINE360_BACKUP_CONFIG', CONFIG))
    sub = p.add_subparsers(dest='cmd', required=True)
    s = sub.add_parser('wal-push')
    s.add_argument('path')
    s.add_argument('name')
    s = sub.add_parser('wal-get')
    s.add_argument('name')
    s.add_argument('dest')
    s = sub.add_parser('base-backup')
    s.add_argument('--force', action='store_true', help='take it on this node even if another is designated')
    s.add_argument('--no-expire', action='store_true')
    sub.add_parser('expire')
    sub.add_parser('list')
    sub.add_parser('wal-list', help='the archived WAL file names in every target, as JSON')
    sub.add_parser('check')
    s = sub.add_parser('restore')
    s.add_argument('--data-dir', '--datadir', dest='data_dir', required=True)
    s.add_argument('--scope', help='ignored (Patroni passes it to a custom bootstrap method)')
    s.add_argument('--backup', default='latest')
    s.add_argument('--target-time')
    s.add_argument('--target-lsn')
    s.add_argument('--target-name')
    s.add_argument('--target-action', default='promote', choices=['promote', 'pause', 'shutdown'])
    s.add_argument('--recovery-conf', action='store_true', help='write restore_command, the target and recovery.signal')
    s.add_argument('--dry-run', action='store_true', help='only check that a backup can serve the request')
    s = sub.add_parser('scratch', help='restore into SCRATCH_DIR/data and start it beside the cluster (no TCP)')
    s.add_argument('--scratch-dir', required=True)
    s.add_argument('--backup', default='latest')
    s.add_argument('--target-time')
    s.add_argument('--target-lsn')
    s.add_argument('--target-name')
    s = sub.add_parser('scratch-stop', help='stop a scratch instance and remove it')
    s.add_argument('--scratch-dir', required=True)
    s = sub.add_parser('drill')
    s.add_argument('--scratch-dir', help='default: <scratch_dir>/drill')
    s.add_argument('--keep', action='store_true')
    s.add_argument('--force', action='store_true', help='run on this node even if another is designated')
    return p.parse_args(argv)


def _run(args):
    try:
        cfg = load_config(args.config)
        cfg['_config_path'] = args.config
        if args.cmd == 'wal-push':
            return wal_push(cfg, args.path, args.name)
        if args.cmd == 'wal-get':
            return wal_get(cfg, args.name, args.dest)
        if args.cmd == 'base-backup':
            return base_backup(cfg, args.force, not args.no_expire)
        if args.cmd == 'expire':
            return expire(cfg)
        if args.cmd == 'list':
            out = {}
            for t in targets(cfg):
                out[t.describe()] = list_backups(cfg, t)
            print(json.dumps(out, indent=1, sort_keys=True))
            return 0
        if args.cmd == 'wal-list':
            print(json.dumps(dict((t.describe(), [k.rsplit('/', 1)[-1] for k in t.list('%s/wal/' % cfg['cluster'])])
                                  for t in targets(cfg)), indent=1, sort_keys=True))
            return 0
        if args.cmd == 'check':
            for t in targets(cfg):
                t.check(write=True, under=cfg['cluster'])
                print('ok %s' % t.describe())
            return 0
        if args.cmd == 'restore':
            return restore(cfg, args.data_dir, args.backup, args.target_time, args.target_lsn, args.target_name,
                           args.target_action, args.recovery_conf, args.dry_run)
        if args.cmd == 'scratch':
            data_dir = os.path.join(args.scratch_dir, 'data')
            if os.path.isdir(data_dir):
                raise store.BackupError('%s exists: stop and remove it with scratch-stop first' % data_dir)
            restore(cfg, data_dir, args.backup, args.target_time, args.target_lsn, args.target_name,
                    'promote', recovery_conf=True)
            sock = start_scratch(cfg, args.scratch_dir)
            print(json.dumps({'socket_dir': sock, 'port': cfg['scratch_port']}))
            return 0
        if args.cmd == 'scratch-stop':
            data_dir = os.path.join(args.scratch_dir, 'data')
            if os.path.isdir(data_dir):
                subprocess.run([os.path.join(cfg['pg_bin'], 'pg_ctl'), '-D', data_dir, '-m', 'fast', 'stop'],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
                shutil.rmtree(data_dir)
            return 0
        if args.cmd == 'drill':
            return drill(cfg, args.scratch_dir, args.keep, args.force)
    except store.BackupError as e:
        log(str(e))
        return e.exit_code
    except Exception as e:  # pylint: disable=broad-except
        log('%s: %s' % (type(e).__name__, e))
        return 2
    return 2


if __name__ == '__main__':
    sys.exit(main())
