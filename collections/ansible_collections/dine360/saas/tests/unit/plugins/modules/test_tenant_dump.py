# -*- coding: utf-8 -*-
# Copyright: (c) 2026, dine360.saas engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Per-tenant dumps against a real PostgreSQL 15 (``pg_server``) and a real moto S3 (``s3_server``)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import datetime
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import uuid

import psycopg2
import pytest

from ansible_collections.dine360.saas.plugins.module_utils import postgres as pgu
from ansible_collections.dine360.saas.plugins.module_utils import tenant_dumps as td
from ansible_collections.dine360.saas.plugins.module_utils import tenants as tu
from ansible_collections.dine360.saas.plugins.module_utils.backup_store import make_target

SEED = 'unit-test-seed-0123456789abcdef'
PLANS = {'starter': dict(connection_limit=10, pool_size=5, statement_timeout='60s', storage_quota_mb=1024,
                         backup_retention_days=7)}
GROUPS = {'core': dict(app_role='u_odoo_core')}
CLUSTER = 'unit'
UTC = datetime.timezone.utc


def tenant(name, state='present'):
    return dict(name=name, plan='starter', group='core', state=state)


@pytest.fixture
def pg(pg_server):
    """alpha (3 orders) and bravo (5 orders), onboarded by the tenants module, data written by the group role."""
    conn = pgu.connect(pg_server.params())
    cur = conn.cursor()
    cur.execute("SELECT datname FROM pg_database WHERE datname NOT IN ('postgres', 'template0', 'template1')")
    for (name,) in cur.fetchall():
        cur.execute('DROP DATABASE "%s" WITH (FORCE)' % name)
    cur.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'u\\_%%' OR rolname LIKE '%%\\_report'"
                " OR rolname = 'pgb_auth'")
    for (name,) in cur.fetchall():
        cur.execute('DROP OWNED BY "%s"' % name)
        cur.execute('DROP ROLE "%s"' % name)
    cur.execute('DROP SCHEMA IF EXISTS dine360 CASCADE')
    cur.execute('GRANT CONNECT, TEMPORARY ON DATABASE postgres, template1 TO PUBLIC')
    cur.execute("CREATE ROLE pgb_auth LOGIN PASSWORD 'x-not-used'")
    tu.reconcile(cur, lambda db: pgu.connect(pg_server.params(), db), [tenant('alpha'), tenant('bravo')],
                 PLANS, GROUPS, SEED, auth_user='pgb_auth')
    for db, rows in (('alpha', 3), ('bravo', 5)):
        app = app_connect(pg_server, db)
        app.cursor().execute('CREATE TABLE pos_order (id serial PRIMARY KEY, total numeric); '
                             'INSERT INTO pos_order (total) SELECT g FROM generate_series(1, %d) g' % rows)
        app.close()
    yield pg_server, cur
    conn.close()


def app_connect(server, db):
    conn = psycopg2.connect(host='127.0.0.1', port=server.port, dbname=db, user='u_odoo_core',
                            password=tu.derive_password(SEED, 'app', 'core'), connect_timeout=5)
    conn.autocommit = True
    return conn


def count(server, db, table='pos_order'):
    conn = pgu.connect(server.params(), db)
    try:
        c = conn.cursor()
        c.execute('SELECT count(*) FROM %s' % table)
        return c.fetchone()[0]
    finally:
        conn.close()


def databases(cur):
    cur.execute('SELECT datname FROM pg_database ORDER BY 1')
    return [r[0] for r in cur.fetchall()]


@pytest.fixture
def path_target(tmp_path):
    d = tmp_path / 'backups'
    d.mkdir()
    return {'type': 'path', 'path': str(d), 'prefix': 'p'}


@pytest.fixture
def s3_target(s3_server):
    return s3_server.bucket('dumps-%s' % uuid.uuid4().hex[:10])


def do_dump(server, tenants, targets, **kw):
    return td.dump(server.params(), lambda db: pgu.connect(server.params(), db), tenants, targets, CLUSTER, **kw)


def do_restore(server, targets, name, **kw):
    return td.restore(server.params(), lambda db: pgu.connect(server.params(), db), targets, CLUSTER, name, **kw)


def stored_sha(spec, key):
    with make_target(spec).get(key) as f:
        return hashlib.sha256(f.read()).hexdigest()


# --------------------------------------------------------------------------- dump

def test_dump_two_tenants_in_parallel_to_path_and_s3(pg, path_target, s3_target, tmp_path):
    server, cur = pg
    metrics = tmp_path / 'dine360_tenant_dumps.prom'
    metrics.write_text('dine360_backup_size_bytes{kind="tenant_dump",tenant="zulu"} 7\n')
    res = do_dump(server, ['alpha', 'bravo'], [path_target, s3_target], kind='scheduled', parallel=2,
                  metrics_file=str(metrics))
    assert sorted(res['dumps']) == ['alpha', 'bravo'] and res['in_recovery'] is False and res['recorded'] is True
    for name, d in res['dumps'].items():
        assert d['key'] == '%s/dumps/%s/%s-scheduled.dump' % (CLUSTER, name, res['timestamp'])
        assert d['size'] > 0 and len(d['locations']) == 2 and d['locations'][1].startswith('s3://')
        for spec in (path_target, s3_target):
            assert stored_sha(spec, d['key']) == d['sha256']
            with make_target(spec).get(td.manifest_key(d['key'])) as f:
                manifest = json.loads(f.read().decode())
            assert manifest['sha256'] == d['sha256'] and manifest['size'] == d['size']
            assert manifest['tenant'] == name and manifest['kind'] == 'scheduled' and manifest['owner'] == 'u_odoo_core'
            assert manifest['pg_version'].startswith('15') and manifest['node']
    gkey = res['globals']['key']
    assert gkey == '%s/dumps/_globals/%s.sql' % (CLUSTER, res['timestamp'])
    with make_target(s3_target).get(gkey) as f:
        assert b'CREATE ROLE u_odoo_core' in f.read()
    cur.execute("SELECT datname, kind, count(*) FROM dine360.tenant_backups GROUP BY 1, 2 ORDER BY 1")
    assert cur.fetchall() == [('alpha', 'scheduled', 2), ('bravo', 'scheduled', 2)]
    text = metrics.read_text()
    assert 'dine360_backup_last_success_timestamp_seconds{kind="tenant_dump",tenant="alpha"}' in text
    assert 'dine360_backup_size_bytes{kind="tenant_dump",tenant="bravo"} %d' % res['dumps']['bravo']['size'] in text
    assert 'dine360_backup_size_bytes{kind="tenant_dump",tenant="zulu"} 7' in text, 'other tenants are kept'
    assert not [n for n in os.listdir(str(tmp_path)) if n.startswith('.dine360')], 'no temporary file left'


def test_a_failing_pg_dump_leaves_nothing_under_the_final_name(pg, path_target, tmp_path):
    server, cur = pg
    fake = tmp_path / 'bin'
    fake.mkdir()
    (fake / 'pg_dump').write_text('#!/bin/sh\nprintf "PGDMP-partial"\necho "pg_dump: error: boom" >&2\nexit 1\n')
    (fake / 'pg_dump').chmod(0o755)
    os.symlink(os.path.join(td.PG_BIN, 'pg_dumpall'), str(fake / 'pg_dumpall'))
    with pytest.raises(td.DumpError, match='boom') as err:
        do_dump(server, ['alpha'], [path_target], pg_bin=str(fake), dump_globals=False)
    assert err.value.details['result']['dumps'] == {}
    assert make_target(path_target).list('') == []
    cur.execute("SELECT to_regclass('dine360.tenant_backups')")
    assert cur.fetchone()[0] is None


def test_final_dump_of_a_suspended_tenant_lets_offboarding_proceed(pg, path_target):
    server, cur = pg
    tu.reconcile(cur, lambda db: pgu.connect(server.params(), db), [tenant('alpha', 'suspended'), tenant('bravo')],
                 PLANS, GROUPS, SEED, auth_user='pgb_auth', actions=['suspend'])
    res = do_dump(server, ['alpha'], [path_target], kind='final', dump_globals=False)
    assert res['recorded'] and res['dumps']['alpha']['size'] > 0
    cur.execute("SELECT datallowconn, datconnlimit FROM pg_database WHERE datname = 'alpha'")
    assert cur.fetchone() == (False, 10), 'the suspended tenant is closed again with its limit'
    out = tu.reconcile(cur, lambda db: pgu.connect(server.params(), db),
                       [tenant('alpha', 'absent'), tenant('bravo')], PLANS, GROUPS, SEED, auth_user='pgb_auth',
                       actions=['drop'])
    assert out['dropped'] == ['alpha']


def test_record_refuses_a_recreated_database(pg):
    server, cur = pg
    cur.execute("SELECT oid FROM pg_database WHERE datname = 'alpha'")
    oid = cur.fetchone()[0]
    rec = dict(datname='alpha', datoid=oid + 12345, kind='final', location='/x', checksum='sha256:0',
               taken_at='2026-01-01T00:00:00+00:00')
    with pytest.raises(td.DumpError, match='not the one that was dumped'):
        td.record(cur, [rec])
    rec['datoid'] = oid
    assert len(td.record(cur, [rec])) == 1
    assert td.record(cur, [rec]) == [], 'recording twice adds nothing'


# --------------------------------------------------------------------------- bad targets

def _ro_mount(path):
    if os.geteuid() == 0:
        if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', path], check=False,
                          capture_output=True).returncode == 0:
            return True
        return False
    os.chmod(path, 0o555)
    return True


def test_bad_targets_fail_before_anything_is_written(pg, path_target, s3_server, s3_target, tmp_path):
    server, cur = pg
    missing = {'type': 'path', 'path': str(tmp_path / 'not-mounted')}
    plain_dir = tmp_path / 'plain'
    plain_dir.mkdir()
    unmounted = {'type': 'path', 'path': str(plain_dir), 'require_mount': True}
    no_bucket = dict(s3_target, bucket='no-such-bucket-here')
    cases = [(missing, 'does not exist (is the share mounted?)'), (unmounted, 'is not a mount point'),
             (no_bucket, 'S3 bucket no-such-bucket-here does not exist')]
    ro = tmp_path / 'ro'
    ro.mkdir()
    mounted = _ro_mount(str(ro))
    if mounted:
        cases.append(({'type': 'path', 'path': str(ro)}, 'refuses writes'))
    try:
        for spec, message in cases:
            with pytest.raises(td.DumpError) as err:
                do_dump(server, ['alpha'], [path_target, spec])
            assert message in str(err.value) and 'backup_targets[1]' in str(err.value), str(err.value)
        with pytest.raises(td.DumpError, match='set backup_targets'):
            do_dump(server, ['alpha'], [])
    finally:
        if mounted and os.geteuid() == 0:
            subprocess.run(['umount', str(ro)], check=True)
    assert make_target(path_target).list('') == [], 'nothing is written when one target is bad'
    cur.execute("SELECT to_regclass('dine360.tenant_backups')")
    assert cur.fetchone()[0] is None


@pytest.fixture(scope='module')
def s3_auth(tmp_path_factory):
    """A moto server that checks signatures (IAM on after three unauthenticated setup calls)."""
    import socket
    import shutil
    import time
    import boto3
    moto = os.path.join(os.path.dirname(os.path.realpath(sys.executable)), 'moto_server')
    if not os.path.exists(moto):
        moto = shutil.which('moto_server')
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    log = open(str(tmp_path_factory.mktemp('moto') / 'moto.log'), 'w')
    proc = subprocess.Popen([moto, '-H', '127.0.0.1', '-p', str(port)], stdout=log, stderr=log,
                            env=dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT='3'))
    try:
        for dummy in range(100):
            try:
                socket.create_connection(('127.0.0.1', port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        url = 'http://127.0.0.1:%d' % port
        iam = boto3.client('iam', endpoint_url=url, region_name='us-east-1', aws_access_key_id='setup',
                           aws_secret_access_key='setup')
        iam.create_user(UserName='dumper')
        iam.put_user_policy(UserName='dumper', PolicyName='all', PolicyDocument=json.dumps(
            {'Version': '2012-10-17', 'Statement': [{'Effect': 'Allow', 'Action': '*', 'Resource': '*'}]}))
        key = iam.create_access_key(UserName='dumper')['AccessKey']
        spec = {'type': 's3', 'bucket': 'authed', 'endpoint_url': url, 'region': 'us-east-1',
                'access_key_id': key['AccessKeyId'], 'secret_access_key': key['SecretAccessKey']}
        make_target(spec).client.create_bucket(Bucket='authed')
        yield spec
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_wrong_s3_credentials_fail_before_anything_is_written(pg, path_target, s3_auth):
    server, cur = pg
    make_target(s3_auth).check()  # the right key works
    for bad, code in ((dict(s3_auth, secret_access_key='wrong-secret-value'), 'SignatureDoesNotMatch'),
                      (dict(s3_auth, access_key_id='AKIANOTAKEY0000'), 'InvalidAccessKeyId')):
        with pytest.raises(td.DumpError) as err:
            do_dump(server, ['alpha'], [path_target, bad])
        text = str(err.value)
        assert 'backup_targets[1]' in text and 'check the credentials' in text, text
        assert 'wrong-secret-value' not in text and s3_auth['secret_access_key'] not in text
    assert make_target(path_target).list('') == []


def test_unknown_tenant_fails_before_dumping(pg, path_target):
    server, cur = pg
    with pytest.raises(td.DumpError, match="'ghost' has no database"):
        do_dump(server, ['alpha', 'ghost'], [path_target])
    with pytest.raises(td.DumpError, match='not a tenant name'):
        do_dump(server, ['Bad Name'], [path_target])
    assert make_target(path_target).list('') == []


# --------------------------------------------------------------------------- restore

def test_restore_into_a_new_name(pg, path_target, s3_target):
    server, cur = pg
    do_dump(server, ['alpha', 'bravo'], [s3_target, path_target])
    res = do_restore(server, [s3_target, path_target], 'bravo', restore_as='bravo-copy')
    assert res['database'] == 'bravo-copy' and res['aside'] is None and res['verified']
    assert res['source'].startswith('s3://')
    assert count(server, 'bravo-copy') == 5 == count(server, 'bravo')
    cur.execute("SELECT pg_get_userbyid(datdba), has_database_privilege('bravo_report', 'bravo-copy', 'CONNECT')"
                " FROM pg_database WHERE datname = 'bravo-copy'")
    assert cur.fetchone() == ('u_odoo_core', False), 'owned by the group role, CONNECT not PUBLIC'
    app = app_connect(server, 'bravo-copy')  # the group role still owns and writes its tables
    app.cursor().execute('INSERT INTO pos_order (total) VALUES (1)')
    app.close()
    # Onboarded like any tenant once it is in saas_tenants: grants and the PgBouncer lookup.
    out = tu.reconcile(cur, lambda db: pgu.connect(server.params(), db),
                       [tenant('alpha'), tenant('bravo'), tenant('bravo-copy')], PLANS, GROUPS, SEED,
                       auth_user='pgb_auth', only=['bravo-copy'])
    assert out['updated'] == ['bravo-copy']
    assert 'bravo-copy__restoring' not in databases(cur)
    with pytest.raises(td.DumpError, match='exists'):
        do_restore(server, [path_target], 'bravo', restore_as='bravo-copy')


def test_restore_onto_its_own_name_keeps_the_old_database_aside(pg, path_target):
    server, cur = pg
    do_dump(server, ['alpha'], [path_target])
    app = app_connect(server, 'alpha')
    app.cursor().execute('INSERT INTO pos_order (total) VALUES (99)')
    session = app_connect(server, 'alpha')
    res = do_restore(server, [path_target], 'alpha')
    aside = res['aside']
    assert aside.startswith('alpha__pre_') and aside in databases(cur)
    assert count(server, 'alpha') == 3 and count(server, aside) == 4
    with pytest.raises(psycopg2.Error):
        session.cursor().execute('SELECT 1')  # its sessions were ended
    cur.execute("SELECT datconnlimit, has_database_privilege('alpha_report', 'alpha', 'CONNECT'),"
                " has_database_privilege('bravo_report', 'alpha', 'CONNECT') FROM pg_database WHERE datname = 'alpha'")
    assert cur.fetchone() == (10, True, False), 'limit and CONNECT grants follow the database'
    app = app_connect(server, 'alpha')
    app.cursor().execute('SELECT count(*) FROM pos_order')
    app.close()


def test_a_corrupted_dump_is_refused_before_any_database_is_created(pg, path_target):
    server, cur = pg
    res = do_dump(server, ['alpha'], [path_target])
    stored = os.path.join(path_target['path'], path_target['prefix'], res['dumps']['alpha']['key'])
    with open(stored, 'r+b') as f:
        f.seek(40)
        byte = f.read(1)
        f.seek(40)
        f.write(bytes([byte[0] ^ 0xFF]))
    before = databases(cur)
    with pytest.raises(td.ChecksumError, match='does not match its manifest'):
        do_restore(server, [path_target], 'alpha', restore_as='alpha-copy')
    with pytest.raises(td.ChecksumError):
        do_restore(server, [path_target], 'alpha')
    assert databases(cur) == before
    assert not [n for n in os.listdir(tempfile.gettempdir()) if n.startswith('.dine360-restore-')]


def test_a_failed_pg_restore_drops_the_temporary_database(pg, path_target):
    server, cur = pg
    cur.execute('CREATE ROLE u_gone NOLOGIN')
    conn = pgu.connect(server.params(), 'alpha')
    conn.cursor().execute('CREATE TABLE t_gone (id int); ALTER TABLE t_gone OWNER TO u_gone')
    do_dump(server, ['alpha'], [path_target], dump_globals=False)
    conn.cursor().execute('DROP TABLE t_gone')
    conn.close()
    cur.execute('DROP ROLE u_gone')
    before = databases(cur)
    with pytest.raises(td.DumpError, match='pg_restore failed.*u_gone'):
        do_restore(server, [path_target], 'alpha', restore_as='alpha-two')
    with pytest.raises(td.DumpError, match='pg_restore failed'):
        do_restore(server, [path_target], 'alpha')
    assert databases(cur) == before, 'no temporary database left, the tenant untouched'
    assert count(server, 'alpha') == 3


def test_restore_from_a_given_timestamp(pg, path_target):
    server, cur = pg
    old = datetime.datetime(2026, 1, 1, 2, 0, tzinfo=UTC)
    do_dump(server, ['alpha'], [path_target], now=old)
    app = app_connect(server, 'alpha')
    app.cursor().execute('INSERT INTO pos_order (total) VALUES (1), (2)')
    app.close()
    do_dump(server, ['alpha'], [path_target])
    do_restore(server, [path_target], 'alpha', restore_as='alpha-jan', restore_from='20260101T020000Z')
    do_restore(server, [path_target], 'alpha', restore_as='alpha-now')
    assert (count(server, 'alpha-jan'), count(server, 'alpha-now')) == (3, 5)
    with pytest.raises(td.DumpError, match='no dump of'):
        do_restore(server, [path_target], 'alpha', restore_as='alpha-x', restore_from='20250101T000000Z')


# --------------------------------------------------------------------------- expire

def test_expire_keeps_the_newest_and_the_final_dumps(pg, path_target, s3_target):
    server, cur = pg
    now = datetime.datetime.now(UTC)
    days = [40, 30, 20]
    for d in days:
        do_dump(server, ['alpha', 'bravo'], [path_target, s3_target], kind='scheduled',
                now=now - datetime.timedelta(days=d))
    do_dump(server, ['alpha'], [path_target, s3_target], kind='final', now=now - datetime.timedelta(days=35),
            dump_globals=False)
    # bravo's dumps are all older than its retention: its newest stays.
    res = td.expire([path_target, s3_target], CLUSTER, {'alpha': 7, 'bravo': 7}, 25, now=now)
    for spec in (path_target, s3_target):
        left = dict((n, [(e['timestamp'], e['kind']) for e in td.list_dumps(make_target(spec), CLUSTER, n)])
                    for n in ('alpha', 'bravo'))
        newest = (now - datetime.timedelta(days=20)).strftime(td.TS_FORMAT)
        final = (now - datetime.timedelta(days=35)).strftime(td.TS_FORMAT)
        assert left['alpha'] == [(final, 'final'), (newest, 'scheduled')]
        assert left['bravo'] == [(newest, 'scheduled')]
        gkeys = [k for k in make_target(spec).list('%s/dumps/_globals/' % CLUSTER) if k.endswith('.sql')]
        assert len(gkeys) == 1, 'globals older than the longest retention (25 days) go, the newest stays'
    assert res['changed'] and len(res['deleted']) == 2 * (2 + 2 + 2) and res['kept'] == {'alpha': 2, 'bravo': 1}
    assert td.expire([path_target, s3_target], CLUSTER, {'alpha': 7, 'bravo': 7}, 25, now=now)['changed'] is False


# --------------------------------------------------------------------------- the module through Ansible

def test_module_through_ansible_never_prints_the_s3_secret(pg, s3_server, s3_target, tmp_path):
    server, cur = pg
    collections = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..', '..', '..', '..', '..'))
    conn = dict(login_unix_socket=server.socket_dir, login_port=server.port)
    bad = dict(s3_target, bucket='missing-bucket-x')
    play = tmp_path / 'play.yml'
    play.write_text(textwrap.dedent('''\
        - hosts: localhost
          gather_facts: false
          tasks:
            - name: dump
              dine360.saas.tenant_dump: %s
              register: dumped
            - name: bad target
              dine360.saas.tenant_dump: %s
              register: bad
              failed_when: false
            - name: restore
              dine360.saas.tenant_dump: %s
              register: restored
            - ansible.builtin.assert:
                that:
                  - dumped.changed and dumped.dumps | length == 2 and dumped.recorded
                  - bad.failed is not defined or bad.msg is search('missing-bucket-x does not exist')
                  - "'does not exist' in bad.msg"
                  - restored.database == 'alpha-back'
        ''') % (json.dumps(dict(conn, action='dump', tenants=['alpha', 'bravo'], targets=[s3_target], cluster=CLUSTER)),
                json.dumps(dict(conn, action='dump', tenants=['alpha'], targets=[bad], cluster=CLUSTER)),
                json.dumps(dict(conn, action='restore', tenant='alpha', restore_as='alpha-back', targets=[s3_target],
                                cluster=CLUSTER))))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections, ANSIBLE_LOCALHOST_WARNING='false',
               ANSIBLE_INVENTORY_UNPARSED_WARNING='false', ANSIBLE_PYTHON_INTERPRETER=sys.executable)
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-vvv', str(play)],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert s3_server.secret_access_key not in out
    assert 'CREATE ROLE' not in out and 'SCRAM-SHA-256$' not in out, 'the globals dump is never printed'
