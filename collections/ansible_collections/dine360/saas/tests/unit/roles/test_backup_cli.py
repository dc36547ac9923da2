# -*- coding: utf-8 -*-
# Copyright: (c) 2026, dine360.saas engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""dine360-backup, installed the way the backup role installs it, against real targets
(a directory, a small tmpfs, moto's S3 server) and a real PostgreSQL 15 that archives
through it: the archive_command contract, checksums on restore, retention, and a
point-in-time recovery round trip."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import datetime
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
COLL = os.path.abspath(os.path.join(HERE, '..', '..', '..'))
CLI_SRC = os.path.join(COLL, 'roles', 'backup', 'files', 'dine360_backup.py')
STORE_SRC = os.path.join(COLL, 'plugins', 'module_utils', 'backup_store.py')
PG_BIN = os.environ.get('D360_PG_BIN', '/usr/lib/postgresql/15/bin')
SYSTEM_PYTHON = '/usr/bin/python3'


@pytest.fixture(scope='module')
def install_dir():
    """The command and its store module side by side, readable by the postgres user."""
    d = tempfile.mkdtemp(prefix='d360-backup-cli-')
    shutil.copy(CLI_SRC, os.path.join(d, 'dine360_backup.py'))
    shutil.copy(STORE_SRC, os.path.join(d, 'dine360_backup_store.py'))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _shared_dir(prefix):
    d = tempfile.mkdtemp(prefix=prefix)
    os.chmod(d, 0o777)
    return d


class Cli(object):
    def __init__(self, install_dir, targets, **extra):
        self.dir = _shared_dir('d360-backup-cfg-')
        self.config = os.path.join(self.dir, 'backup.json')
        cfg = {'cluster': 'unit', 'targets': targets, 'patroni_url': '', 'node': 'unit1',
               'staging_dir': os.path.join(self.dir, 'staging'), 'textfile_dir': self.dir, 'wal_wait_seconds': 60}
        cfg.update(extra)
        with open(self.config, 'w') as f:
            json.dump(cfg, f)
        os.chmod(self.config, 0o644)
        # The system Python with Debian's libraries, as on a node (the postgres user runs it).
        self.argv = [SYSTEM_PYTHON, os.path.join(install_dir, 'dine360_backup.py'), '--config', self.config]

    def command_line(self):
        return ' '.join(self.argv)

    def run(self, *args, **kw):
        return subprocess.run(self.argv + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, check=False, **kw)


def _segment(tmp, name, seed=0, size=16 * 1024 * 1024, random_data=False):
    path = os.path.join(tmp, name)
    with open(path, 'wb') as f:
        if random_data:
            f.write(os.urandom(size))
        else:
            block = (b'%08d' % seed) * 1024
            for dummy in range(size // len(block)):
                f.write(block)
    return path


def _stored(root, name, cluster='unit'):
    return os.path.join(root, cluster, 'wal', name)


def test_same_segment_twice_is_success(install_dir, tmp_path):
    root = _shared_dir('d360-target-')
    cli = Cli(install_dir, [{'type': 'path', 'path': root}])
    seg = _segment(str(tmp_path), '000000010000000000000001')
    assert cli.run('wal-push', seg, '000000010000000000000001').returncode == 0
    first = os.stat(_stored(root, '000000010000000000000001'))
    again = cli.run('wal-push', seg, '000000010000000000000001')
    assert again.returncode == 0, again.stderr
    assert os.stat(_stored(root, '000000010000000000000001')).st_mtime == first.st_mtime  # not rewritten
    assert os.path.getsize(_stored(root, '000000010000000000000001')) < 1024 * 1024  # compressed
    restored = str(tmp_path / 'restored')
    assert cli.run('wal-get', '000000010000000000000001', restored).returncode == 0
    with open(seg, 'rb') as a, open(restored, 'rb') as b:
        assert a.read() == b.read()
    assert 'dine360_backup_last_success_timestamp_seconds{kind="wal_archive"}' in \
        open(os.path.join(cli.dir, 'dine360_backup_wal_archive.prom')).read()


def test_different_segment_under_the_same_name_is_refused(install_dir, tmp_path):
    root = _shared_dir('d360-target-')
    cli = Cli(install_dir, [{'type': 'path', 'path': root}])
    name = '000000010000000000000002'
    assert cli.run('wal-push', _segment(str(tmp_path), name, seed=1), name).returncode == 0
    before = open(_stored(root, name), 'rb').read()
    other = _segment(str(tmp_path / '..'), 'other-' + name, seed=2)
    res = cli.run('wal-push', other, name)
    assert 0 < res.returncode < 125
    assert 'different contents' in res.stderr and 'refusing to overwrite' in res.stderr
    assert open(_stored(root, name), 'rb').read() == before


def test_disk_full_fails_below_125_and_leaves_nothing(install_dir, tmp_path):
    if os.geteuid() != 0:
        pytest.skip('mounting a small tmpfs needs root (CI runs as root)')
    mnt = tempfile.mkdtemp(prefix='d360-full-')
    subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=2m,mode=0777', 'tmpfs', mnt], check=True)
    try:
        cli = Cli(install_dir, [{'type': 'path', 'path': mnt, 'require_mount': True}])
        name = '000000010000000000000003'
        seg = _segment(str(tmp_path), name, random_data=True)  # incompressible: 16 MiB into 2 MiB
        res = cli.run('wal-push', seg, name)
        assert 0 < res.returncode < 125, res.stderr
        assert 'No space left on device' in res.stderr
        assert not os.path.exists(_stored(mnt, name))
        assert os.listdir(os.path.join(mnt, 'unit', 'wal')) == []  # no temporary file left behind
        assert os.path.exists(seg)  # PostgreSQL keeps its segment and retries
        small = _segment(str(tmp_path), '000000010000000000000004', size=64 * 1024)
        assert cli.run('wal-push', small, '000000010000000000000004').returncode == 0  # recovers once there is room
    finally:
        subprocess.run(['umount', mnt], check=False)
        os.rmdir(mnt)


def test_unmounted_path_is_refused(install_dir, tmp_path):
    cli = Cli(install_dir, [{'type': 'path', 'path': str(tmp_path), 'require_mount': True}])
    res = cli.run('check')
    assert res.returncode == 3
    assert 'is not a mount point' in res.stderr


def test_leftover_temporary_file_does_not_block(install_dir, tmp_path):
    root = _shared_dir('d360-target-')
    os.makedirs(os.path.join(root, 'unit', 'wal'))
    name = '000000010000000000000005'
    with open(os.path.join(root, 'unit', 'wal', '.tmp.killed-upload'), 'wb') as f:
        f.write(b'half a segment')  # what a push killed mid-write leaves
    cli = Cli(install_dir, [{'type': 'path', 'path': root}])
    assert cli.run('wal-push', _segment(str(tmp_path), name), name).returncode == 0
    assert cli.run('wal-get', name, str(tmp_path / 'x')).returncode == 0


def test_s3_same_file_twice_and_conflict(install_dir, tmp_path, s3_server):
    cli = Cli(install_dir, [s3_server.bucket('wal-contract')])
    name = '000000010000000000000006'
    seg = _segment(str(tmp_path), name, seed=6)
    assert cli.run('wal-push', seg, name).returncode == 0
    assert cli.run('wal-push', seg, name).returncode == 0
    res = cli.run('wal-push', _segment(str(tmp_path / '..'), 'o' + name, seed=7), name)
    assert res.returncode == 4 and 'different contents' in res.stderr
    out = str(tmp_path / 'back')
    assert cli.run('wal-get', name, out).returncode == 0
    assert open(out, 'rb').read() == open(seg, 'rb').read()
    assert cli.run('wal-get', '000000010000000000000099', out + '2').returncode == 1  # not archived: plain miss


class _DroppingServer(object):
    """Accepts a connection, reads part of the request, and hangs up: an interrupted upload."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, dummy = self.sock.accept()
            except OSError:
                return
            try:
                conn.recv(65536)
            finally:
                conn.close()


def test_interrupted_upload_fails_and_the_retry_succeeds(install_dir, tmp_path, s3_server):
    spec = s3_server.bucket('wal-interrupted')
    name = '000000010000000000000007'
    seg = _segment(str(tmp_path), name, seed=8)
    broken = dict(spec, endpoint_url='http://127.0.0.1:%d' % _DroppingServer().port)
    res = Cli(install_dir, [broken]).run('wal-push', seg, name)
    assert 0 < res.returncode < 125
    good = Cli(install_dir, [spec])
    assert good.run('wal-get', name, str(tmp_path / 'none')).returncode == 1  # nothing half-stored
    assert good.run('wal-push', seg, name).returncode == 0


def test_corrupted_segment_is_refused_on_restore(install_dir, tmp_path):
    root = _shared_dir('d360-target-')
    cli = Cli(install_dir, [{'type': 'path', 'path': root}])
    name = '000000010000000000000008'
    assert cli.run('wal-push', _segment(str(tmp_path), name, seed=9), name).returncode == 0
    stored = _stored(root, name)
    blob = bytearray(open(stored, 'rb').read())
    blob[-10] ^= 0xFF
    os.chmod(stored, 0o644)
    open(stored, 'wb').write(bytes(blob))
    dest = str(tmp_path / 'restored')
    res = cli.run('wal-get', name, dest)
    assert res.returncode == 5, res.stderr
    assert not os.path.exists(dest)


def test_missing_bucket_and_wrong_credentials(install_dir, s3_server):
    spec = s3_server.bucket('exists')
    res = Cli(install_dir, [dict(spec, bucket='no-such-bucket')]).run('check')
    assert res.returncode == 3 and 'does not exist' in res.stderr
    res = Cli(install_dir, [dict(spec, access_key_id='AKIAWRONG', secret_access_key='wrong-secret-value')]).run('check')
    assert 'wrong-secret-value' not in res.stderr


def _psql(server, sql, db='postgres'):
    run = subprocess.run(_as_pg([os.path.join(PG_BIN, 'psql'), '-h', server['sock'], '-p', str(server['port']),
                                 '-d', db, '-XAtc', sql]), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True, check=True)
    return run.stdout.strip()


def _as_pg(argv):
    return (['runuser', '-u', 'postgres', '--'] + argv) if os.geteuid() == 0 else argv


@pytest.fixture
def archiving_server(install_dir, s3_server, free_port):
    """A PostgreSQL 15 whose archive_command is dine360-backup, to a path and to S3."""
    base = _shared_dir('d360-pitr-')
    root = _shared_dir('d360-pitr-target-')
    server = {'base': base, 'data': os.path.join(base, 'data'), 'sock': os.path.join(base, 'sock'),
              'port': free_port(), 'root': root}
    os.makedirs(server['sock'])
    os.chmod(server['sock'], 0o777)
    cli = Cli(install_dir, [{'type': 'path', 'path': root}, s3_server.bucket('pitr-%d' % server['port'])],
              pg_bin=PG_BIN, data_dir=server['data'], pg_port=server['port'], socket_dir=server['sock'],
              scratch_port=free_port())
    subprocess.run(_as_pg([os.path.join(PG_BIN, 'initdb'), '-D', server['data'], '-U', 'postgres', '--auth-local=trust',
                           '-E', 'UTF8', '--locale=C.UTF-8']), check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(server['data'], 'postgresql.auto.conf'), 'a') as f:
        f.write("listen_addresses = ''\nport = %d\nunix_socket_directories = '%s'\narchive_mode = on\n"
                "archive_command = '%s wal-push %%p %%f'\nwal_level = replica\n"
                % (server['port'], server['sock'], cli.command_line()))
    subprocess.run(_as_pg([os.path.join(PG_BIN, 'pg_ctl'), '-D', server['data'], '-l', os.path.join(base, 'log'),
                           '-w', 'start']), check=True, stdout=subprocess.DEVNULL)
    server['cli'] = cli
    try:
        yield server
    finally:
        subprocess.run(_as_pg([os.path.join(PG_BIN, 'pg_ctl'), '-D', server['data'], '-m', 'immediate', 'stop']),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        subprocess.run(cli.argv + ['scratch-stop', '--scratch-dir', os.path.join(base, 'scratch')],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


def _run_as_pg(cli, *args):
    return subprocess.run(_as_pg(cli.argv + list(args)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, check=False)


def test_point_in_time_recovery_round_trip(archiving_server):
    srv, cli = archiving_server, archiving_server['cli']
    _psql(srv, 'CREATE TABLE orders (id int PRIMARY KEY, note text); INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(1, 500) g')
    res = _run_as_pg(cli, 'base-backup', '--no-expire')
    assert res.returncode == 0, res.stderr
    backup = json.loads(res.stdout.strip().splitlines()[-1])
    _psql(srv, 'INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(501, 800) g')
    time.sleep(1.1)
    noted = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.%fZ')
    time.sleep(1.1)
    _psql(srv, 'DELETE FROM orders WHERE id > 100')
    _psql(srv, 'SELECT pg_switch_wal()')
    deadline = time.time() + 30
    while _psql(srv, "SELECT last_archived_wal >= pg_walfile_name(pg_current_wal_lsn() - 1) FROM pg_stat_archiver") != 't':
        assert time.time() < deadline, 'the archiver did not catch up'
        time.sleep(0.3)
    assert _psql(srv, 'SELECT count(*) FROM orders') == '100'

    # A time before the oldest backup: refused before anything is written.
    scratch = os.path.join(srv['base'], 'scratch')
    early = _run_as_pg(cli, 'scratch', '--scratch-dir', scratch, '--target-time', '2020-01-01T00:00:00Z')
    assert early.returncode != 0 and 'before the oldest base backup' in early.stderr
    assert not os.path.exists(os.path.join(scratch, 'data'))

    res = _run_as_pg(cli, 'scratch', '--scratch-dir', scratch, '--target-time', noted)
    assert res.returncode == 0, res.stderr + open(os.path.join(scratch, 'postgres.log')).read()
    info = json.loads(res.stdout.strip().splitlines()[-1])
    scratch_srv = {'sock': info['socket_dir'], 'port': info['port']}
    assert _psql(scratch_srv, 'SELECT count(*) FROM orders') == '800'
    assert backup['backup'] in res.stdout
    assert _run_as_pg(cli, 'scratch-stop', '--scratch-dir', scratch).returncode == 0


def test_retention_keeps_what_retained_backups_need(archiving_server):
    srv, cli = archiving_server, archiving_server['cli']
    _psql(srv, 'CREATE TABLE t (x int)')
    ids = []
    for dummy in range(2):
        _psql(srv, 'INSERT INTO t SELECT generate_series(1, 1000); SELECT pg_switch_wal()')
        res = _run_as_pg(cli, 'base-backup', '--no-expire')
        assert res.returncode == 0, res.stderr
        ids.append(json.loads(res.stdout.strip().splitlines()[-1])['backup'])
        time.sleep(1.1)  # backup ids have one-second resolution
    cfg = json.load(open(cli.config))
    cfg.update(retention_count=1, retention_days=0)
    with open(cli.config, 'w') as f:
        json.dump(cfg, f)
    res = _run_as_pg(cli, 'expire')
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)['expire']
    assert all(r['kept'] == [ids[1]] and r['deleted'] == [ids[0]] and r['wal_deleted'] > 0 for r in report)
    listing = json.loads(_run_as_pg(cli, 'list').stdout)
    kept = list(listing.values())[0]
    assert [b['id'] for b in kept] == [ids[1]]
    wal = sorted(os.listdir(os.path.join(srv['root'], 'unit', 'wal')))
    assert min(w for w in wal if len(w) == 24) >= kept[0]['start_wal'][:24][:8] + kept[0]['start_wal'][8:]
    # The kept backup still restores: every segment it needs survived.
    res = _run_as_pg(cli, 'drill', '--scratch-dir', os.path.join(srv['base'], 'drill'))
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1])['ok'] is True
