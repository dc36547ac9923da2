# -*- coding: utf-8 -*-
# Copyright: (c) 2026, dine360.saas engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The tenant reconciler against a real PostgreSQL 15 server (fixture ``pg_server``)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os
import subprocess
import sys
import textwrap

import psycopg2
import pytest

from ansible_collections.dine360.saas.plugins.module_utils import postgres as pgu
from ansible_collections.dine360.saas.plugins.module_utils import tenants as tu

SEED = 'unit-test-seed-0123456789abcdef'
PLANS = {
    'starter': dict(connection_limit=10, pool_size=5, statement_timeout='60s', storage_quota_mb=1024,
                    backup_retention_days=7, odoo_modules=['pos_restaurant']),
    'pro': dict(connection_limit=30, pool_size=15, statement_timeout='5min', storage_quota_mb=8192,
                backup_retention_days=30, reporting_connection_limit=4,
                settings={'idle_in_transaction_session_timeout': '10min'}, odoo_modules=['pos_restaurant']),
}
GROUPS = {
    'core': dict(app_role='u_odoo_core'),
    'vip': dict(app_role='u_odoo_vip', template_db='vip-tpl'),
}


def tenant(name, plan='starter', group='core', state='present', **kw):
    d = dict(name=name, plan=plan, group=group, state=state)
    d.update(kw)
    return d


@pytest.fixture
def pg(pg_server):
    """A fresh slate: drops every database and role a previous test made."""
    conn = pgu.connect(pg_server.params())
    cur = conn.cursor()
    cur.execute("SELECT datname FROM pg_database WHERE datname NOT IN ('postgres', 'template0', 'template1')")
    for (name,) in cur.fetchall():
        cur.execute('ALTER DATABASE "%s" IS_TEMPLATE false' % name)
        cur.execute('DROP DATABASE "%s" WITH (FORCE)' % name)
    cur.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'u\\_%%' OR rolname LIKE '%%\\_report'"
                " OR rolname = 'pgb_auth'")
    for (name,) in cur.fetchall():
        cur.execute('DROP OWNED BY "%s"' % name)
        cur.execute('DROP ROLE "%s"' % name)
    cur.execute("DROP SCHEMA IF EXISTS dine360 CASCADE")
    cur.execute("GRANT CONNECT, TEMPORARY ON DATABASE postgres, template1 TO PUBLIC")
    cur.execute("CREATE ROLE pgb_auth LOGIN PASSWORD 'x-not-used'")
    yield pg_server, cur
    conn.close()


def run(server, cur, tenants, check_mode=False, groups=None, **kw):
    kw.setdefault('auth_user', 'pgb_auth')
    return tu.reconcile(cur, lambda db: pgu.connect(server.params(), db), tenants, PLANS, groups or GROUPS, SEED,
                        check_mode=check_mode, **kw)


def tcp_connect(server, db, user, password):
    return psycopg2.connect(host='127.0.0.1', port=server.port, dbname=db, user=user, password=password,
                            connect_timeout=5)


def databases(cur):
    cur.execute("SELECT datname FROM pg_database ORDER BY 1")
    return [r[0] for r in cur.fetchall()]


def report_pw(name):
    return tu.derive_password(SEED, 'report', name)


def app_pw(group):
    return tu.derive_password(SEED, 'app', group)


# --------------------------------------------------------------------------- validation

BAD = [
    (tenant('Pizza'), 'Pizza'),
    (tenant('1pizza'), '1pizza'),
    (tenant('a' * 42), 'a' * 42),
    (tenant('a"; drop database x; --'), 'drop database'),
    (tenant("it's"), "it's"),
    (tenant('postgres'), 'reserved'),
    (tenant('template1'), 'reserved'),
    (tenant('admin'), 'reserved'),
    (tenant('core-template'), 'reserved'),
    (tenant('vip-tpl'), 'reserved'),
    (tenant('pizza-'), 'does not end with a hyphen'),
    (tenant('xn--pizza'), 'third and fourth places'),
    (tenant('pgbouncer'), "PgBouncer's admin console"),
    (tenant('other-template'), "groups' template databases"),
    (tenant('ok-name', plan='gold'), "unknown plan 'gold'"),
    (tenant('ok-other', group='nope'), "unknown group 'nope'"),
    (tenant('ok-state', state='deleted'), 'state must be one of'),
]


def test_every_bad_entry_is_named_and_nothing_changes(pg):
    server, cur = pg
    before = databases(cur)
    entries = [tenant('good-one')] + [b[0] for b in BAD] + [tenant('good-one')]
    with pytest.raises(tu.TenantError) as err:
        run(server, cur, entries)
    errors = err.value.errors
    for i, (entry, fragment) in enumerate(BAD, start=1):
        hits = [e for e in errors if e.startswith('saas_tenants[%d]' % i)]
        assert hits, 'entry %d (%r) not reported: %s' % (i, entry['name'], errors)
        assert fragment in hits[0] or fragment in repr(hits[0]), hits[0]
    assert any('saas_tenants[%d]' % (len(BAD) + 1) in e and 'duplicate of saas_tenants[0]' in e for e in errors)
    assert databases(cur) == before, 'a bad list must change nothing'
    cur.execute("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'u\\_%%'")
    assert cur.fetchone()[0] == 0


def test_bad_plans_and_groups_are_explained():
    plans = {'x': dict(connection_limit=5, pool_size=10, statement_timeout='soon', storage_quota_mb=1,
                       backup_retention_days=1)}
    groups = {'g1': dict(app_role='same'), 'g2': dict(app_role='same'), 'g3': dict(app_role='Bad-Role')}
    with pytest.raises(tu.TenantError) as err:
        tu.validate([tenant('abc', plan='x', group='g1')], plans, groups)
    text = '\n'.join(err.value.errors)
    assert 'pool_size 10 exceeds its connection_limit 5' in text
    assert 'statement_timeout' in text
    assert "also the role of group 'g1'" in text
    assert "saas_groups['g3'].app_role" in text


def test_limit_to_unknown_tenant_fails(pg):
    server, cur = pg
    with pytest.raises(tu.TenantError, match='not in saas_tenants'):
        run(server, cur, [tenant('alpha')], only=['ghost'])


# --------------------------------------------------------------------------- onboarding

def test_onboard_creates_isolated_tenants_and_rerun_is_idempotent(pg):
    server, cur = pg
    tenants = [tenant('alpha'), tenant('bravo', plan='pro'), tenant('charlie', group='vip')]
    res = run(server, cur, tenants)
    assert res['changed'] and res['created'] == ['alpha', 'bravo', 'charlie']
    text = '\n'.join(res['statements'])
    for secret in [SEED, app_pw('core'), app_pw('vip'), report_pw('alpha')]:
        assert secret not in text
    assert "PASSWORD '********'" in text

    cur.execute("SELECT datname, pg_get_userbyid(datdba), datconnlimit, pg_encoding_to_char(encoding), "
                "datallowconn FROM pg_database WHERE datname IN ('alpha', 'bravo', 'charlie') ORDER BY 1")
    assert cur.fetchall() == [('alpha', 'u_odoo_core', 10, 'UTF8', True), ('bravo', 'u_odoo_core', 30, 'UTF8', True),
                              ('charlie', 'u_odoo_vip', 10, 'UTF8', True)]
    cur.execute("SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
                "WHERE d.datname = 'bravo'")
    assert sorted(cur.fetchone()[0]) == ['idle_in_transaction_session_timeout=10min', 'statement_timeout=5min']
    cur.execute("SELECT rolconnlimit, rolconfig FROM pg_roles WHERE rolname = 'bravo_report'")
    assert cur.fetchone() == (4, ['default_transaction_read_only=on'])

    again = run(server, cur, tenants)
    assert again['changed'] is False and again['statements'] == [], again['statements']
    assert set(again['tenants'].values()) == {'unchanged'}


def test_reporting_role_sees_own_data_only(pg):
    server, cur = pg
    run(server, cur, [tenant('alpha'), tenant('bravo'), tenant('charlie', group='vip')])
    # The application role creates a table after onboarding: default privileges apply.
    app = tcp_connect(server, 'alpha', 'u_odoo_core', app_pw('core'))
    app.autocommit = True
    app.cursor().execute("CREATE TABLE pos_order (id serial PRIMARY KEY, total numeric); "
                         "INSERT INTO pos_order (total) VALUES (12.5), (7)")
    app.close()
    ro = tcp_connect(server, 'alpha', 'alpha_report', report_pw('alpha'))
    rcur = ro.cursor()
    rcur.execute('SELECT count(*) FROM pos_order')
    assert rcur.fetchone()[0] == 2
    with pytest.raises(psycopg2.Error, match='read-only transaction'):
        rcur.execute('INSERT INTO pos_order (total) VALUES (1)')
    ro.close()
    for db in ['bravo', 'charlie', 'postgres', 'template1']:
        with pytest.raises(psycopg2.OperationalError, match='permission denied for database'):
            tcp_connect(server, db, 'alpha_report', report_pw('alpha'))
    with pytest.raises(psycopg2.OperationalError, match='password authentication failed'):
        tcp_connect(server, 'alpha', 'alpha_report', report_pw('bravo'))


def test_group_role_cannot_reach_other_groups(pg):
    server, cur = pg
    run(server, cur, [tenant('alpha'), tenant('charlie', group='vip')])
    tcp_connect(server, 'alpha', 'u_odoo_core', app_pw('core')).close()
    tcp_connect(server, 'postgres', 'u_odoo_core', app_pw('core')).close()  # Odoo's bus LISTENs here
    with pytest.raises(psycopg2.OperationalError, match='permission denied for database'):
        tcp_connect(server, 'charlie', 'u_odoo_core', app_pw('core'))
    with pytest.raises(psycopg2.OperationalError, match='permission denied for database'):
        tcp_connect(server, 'alpha', 'u_odoo_vip', app_pw('vip'))


def test_pgbouncer_lookup_function_in_tenant_databases(pg):
    server, cur = pg
    run(server, cur, [tenant('alpha')])
    conn = pgu.connect(server.params(), 'alpha')
    c = conn.cursor()
    c.execute("SELECT has_function_privilege('pgb_auth', 'pgbouncer.get_auth(text)', 'EXECUTE'), "
              "has_function_privilege('alpha_report', 'pgbouncer.get_auth(text)', 'EXECUTE'), "
              "has_database_privilege('pgb_auth', 'alpha', 'CONNECT')")
    assert c.fetchone() == (True, False, True)
    c.execute("SELECT usename, passwd LIKE 'SCRAM-SHA-256$%%' FROM pgbouncer.get_auth('u_odoo_core')")
    assert c.fetchone() == ('u_odoo_core', True)
    c.execute("SELECT count(*) FROM pgbouncer.get_auth('postgres')")
    assert c.fetchone()[0] == 0, 'superusers must never be served by the lookup'
    conn.close()


def test_group_template_database_is_used_when_present(pg):
    server, cur = pg
    cur.execute('CREATE DATABASE "vip-tpl"')
    t = pgu.connect(server.params(), 'vip-tpl')
    t.cursor().execute('CREATE TABLE res_company (id int); INSERT INTO res_company VALUES (1)')
    t.close()
    res = run(server, cur, [tenant('charlie', group='vip'), tenant('alpha')])
    assert any('TEMPLATE "vip-tpl"' in s for s in res['statements'])
    assert any('"alpha"' in s and 'TEMPLATE "template0"' in s for s in res['statements'])
    c = pgu.connect(server.params(), 'charlie')
    cc = c.cursor()
    cc.execute('SELECT count(*) FROM res_company')
    assert cc.fetchone()[0] == 1
    c.close()


def _odoo_template(server, cur, name):
    """A stand-in for an Odoo template: a database with Odoo's module table and one row."""
    cur.execute('CREATE DATABASE "%s"' % name)
    t = pgu.connect(server.params(), name)
    t.cursor().execute('CREATE TABLE ir_module_module (id int, name text); '
                       "INSERT INTO ir_module_module VALUES (1, 'base')")
    t.close()


def _has_odoo(server, name):
    c = pgu.connect(server.params(), name)
    try:
        cc = c.cursor()
        cc.execute("SELECT to_regclass('public.ir_module_module') IS NOT NULL")
        return cc.fetchone()[0]
    finally:
        c.close()


ODOO_GROUPS = dict((g, dict(v, release='17.0')) for g, v in GROUPS.items())


def test_required_template_missing_refuses_to_create(pg):
    server, cur = pg
    with pytest.raises(tu.TenantError) as err:
        run(server, cur, [tenant('alpha'), tenant('charlie', group='vip')], require_templates=True, groups=ODOO_GROUPS)
    msgs = err.value.errors
    assert any("'alpha'" in e and "'core-template'" in e and 'playbooks/app_tier.yml' in e for e in msgs), msgs
    assert any("'charlie'" in e and "'vip-tpl'" in e for e in msgs), msgs
    assert 'alpha' not in databases(cur) and 'charlie' not in databases(cur)
    # A group without a release runs no Odoo: its databases need no template.
    res = run(server, cur, [tenant('alpha'), tenant('charlie', group='vip')], require_templates=True,
              groups=dict(ODOO_GROUPS, vip=GROUPS['vip']), only=['charlie'])
    assert res['created'] == ['charlie'], res


def test_empty_database_is_cloned_again_and_one_with_data_is_left_broken(pg):
    server, cur = pg
    # Databases made before their group's template existed: one empty, one holding a table.
    res = run(server, cur, [tenant('alpha'), tenant('bravo')])
    assert res['created'] == ['alpha', 'bravo']
    b = pgu.connect(server.params(), 'bravo')
    b.autocommit = True
    b.cursor().execute('CREATE TABLE orders (id int); INSERT INTO orders VALUES (42)')
    b.close()
    _odoo_template(server, cur, 'core-template')
    res = run(server, cur, [tenant('alpha'), tenant('bravo')], require_templates=True, groups=ODOO_GROUPS)
    assert res['recloned'] == ['alpha'] and res['broken'] == ['bravo'], res
    assert _has_odoo(server, 'alpha'), 'alpha was not cloned from the template'
    assert not _has_odoo(server, 'bravo')
    b = pgu.connect(server.params(), 'bravo')
    bc = b.cursor()
    bc.execute('SELECT id FROM orders')
    assert bc.fetchall() == [(42,)], "bravo's data must be left as it was"
    b.close()
    assert any('bravo' in w and 'restore' in w for w in res['warnings']), res['warnings']
    # The clone got the tenant setup again (reporting role can connect) and a re-run is quiet.
    tcp_connect(server, 'alpha', tu.report_role('alpha'), report_pw('alpha')).close()
    again = run(server, cur, [tenant('alpha'), tenant('bravo')], require_templates=True, groups=ODOO_GROUPS)
    assert again['recloned'] == [] and again['broken'] == ['bravo']
    assert again['statements'] == [], again['statements']
    # A run limited to another tenant still reports bravo (it must stay off the routes).
    scoped = run(server, cur, [tenant('alpha'), tenant('bravo')], require_templates=True, groups=ODOO_GROUPS,
                 only=['alpha'])
    assert scoped['broken'] == ['bravo'] and scoped['statements'] == [], scoped
    # Once its database holds Odoo again, bravo is set up as a tenant and no longer broken.
    b = pgu.connect(server.params(), 'bravo')
    b.autocommit = True
    b.cursor().execute('CREATE TABLE ir_module_module (id int, name text)')
    b.close()
    repaired = run(server, cur, [tenant('alpha'), tenant('bravo')], require_templates=True, groups=ODOO_GROUPS)
    assert repaired['broken'] == [] and repaired['updated'] == ['bravo'], repaired


def test_check_mode_predicts_and_changes_nothing(pg):
    server, cur = pg
    before = databases(cur)
    res = run(server, cur, [tenant('alpha'), tenant('bravo')], check_mode=True)
    assert res['changed'] and res['created'] == ['alpha', 'bravo']
    assert any(s.startswith('CREATE DATABASE "alpha"') for s in res['statements'])
    assert databases(cur) == before
    assert res['diff']['after']['alpha']['exists'] is True and res['diff']['before']['alpha']['exists'] is False


def test_plan_change_updates_limits_and_resets_stray_settings(pg):
    server, cur = pg
    run(server, cur, [tenant('alpha')])
    cur.execute("ALTER DATABASE alpha SET work_mem = '64MB'")
    res = run(server, cur, [tenant('alpha', plan='pro')])
    assert res['updated'] == ['alpha']
    assert res['diff']['before']['alpha']['connection_limit'] == 10
    assert res['diff']['after']['alpha']['connection_limit'] == 30
    cur.execute("SELECT datconnlimit FROM pg_database WHERE datname = 'alpha'")
    assert cur.fetchone()[0] == 30
    cur.execute("SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
                "WHERE d.datname = 'alpha'")
    assert sorted(cur.fetchone()[0]) == ['idle_in_transaction_session_timeout=10min', 'statement_timeout=5min']
    assert run(server, cur, [tenant('alpha', plan='pro')])['changed'] is False


def test_drifted_password_and_revoked_grant_are_repaired(pg):
    server, cur = pg
    run(server, cur, [tenant('alpha')])
    cur.execute("ALTER ROLE alpha_report PASSWORD 'changed-by-hand'")
    cur.execute('GRANT CONNECT ON DATABASE alpha TO PUBLIC')
    res = run(server, cur, [tenant('alpha')])
    assert res['updated'] == ['alpha']
    assert 'ALTER ROLE "alpha_report" PASSWORD \'********\'' in res['statements']
    tcp_connect(server, 'alpha', 'alpha_report', report_pw('alpha')).close()
    cur.execute("SELECT has_database_privilege('u_odoo_vip', 'alpha', 'CONNECT')")
    assert cur.fetchone()[0] is False


# --------------------------------------------------------------------------- suspend / resume

def test_suspend_ends_sessions_and_resume_restores(pg):
    server, cur = pg
    run(server, cur, [tenant('alpha'), tenant('bravo')])
    session = tcp_connect(server, 'alpha', 'u_odoo_core', app_pw('core'))
    other = tcp_connect(server, 'bravo', 'u_odoo_core', app_pw('core'))
    res = run(server, cur, [tenant('alpha', state='suspended'), tenant('bravo')], actions=['suspend'])
    assert res['suspended'] == ['alpha'] and res['changed']
    with pytest.raises(psycopg2.Error):
        session.cursor().execute('SELECT 1')
    with pytest.raises(psycopg2.OperationalError, match='not currently accepting connections'):
        tcp_connect(server, 'alpha', 'u_odoo_core', app_pw('core'))
    other.cursor().execute('SELECT 1')  # the other tenant is untouched
    other.close()
    # Onboarding runs (create/update) leave a suspended tenant suspended and do not fail.
    assert run(server, cur, [tenant('alpha', state='suspended'), tenant('bravo')],
               actions=['create', 'update'])['changed'] is False
    assert run(server, cur, [tenant('alpha', state='suspended'), tenant('bravo')])['changed'] is False
    # --tags onboard with the entry present again does not resume; --tags resume does.
    assert run(server, cur, [tenant('alpha'), tenant('bravo')], actions=['create', 'update'])['changed'] is False
    res = run(server, cur, [tenant('alpha'), tenant('bravo')], actions=['resume'])
    assert res['resumed'] == ['alpha']
    tcp_connect(server, 'alpha', 'u_odoo_core', app_pw('core')).close()
    assert run(server, cur, [tenant('alpha'), tenant('bravo')])['changed'] is False


# --------------------------------------------------------------------------- offboarding

def test_offboard_needs_a_final_backup_or_force(pg):
    server, cur = pg
    run(server, cur, [tenant('alpha'), tenant('bravo'), tenant('charlie')])
    with pytest.raises(tu.TenantError, match="'alpha': refusing to drop") as err:
        run(server, cur, [tenant('alpha', state='absent'), tenant('bravo', state='absent'), tenant('charlie')])
    assert len(err.value.errors) == 2
    assert {'alpha', 'bravo'} <= set(databases(cur)), 'a refused offboard must drop nothing'

    # A final backup recorded for alpha's database (by the backup module): alpha may go.
    cur.execute(tu.BACKUP_CATALOG_DDL)
    cur.execute("INSERT INTO dine360.tenant_backups (datname, datoid, kind, location) "
                "SELECT datname, oid, 'final', 's3://x/alpha.dump' FROM pg_database WHERE datname = 'alpha'")
    res = run(server, cur, [tenant('alpha', state='absent'), tenant('bravo', state='absent', force=True),
                            tenant('charlie')])
    assert res['dropped'] == ['alpha', 'bravo']
    assert 'alpha' not in databases(cur) and 'bravo' not in databases(cur)
    cur.execute("SELECT count(*) FROM pg_roles WHERE rolname IN ('alpha_report', 'bravo_report')")
    assert cur.fetchone()[0] == 0
    # A name reused later does not inherit the old database's backup record (matched by OID).
    run(server, cur, [tenant('alpha')])
    with pytest.raises(tu.TenantError, match='refusing to drop'):
        run(server, cur, [tenant('alpha', state='absent')])
    assert run(server, cur, [tenant('alpha', state='absent')], force=True)['dropped'] == ['alpha']


def test_onboard_actions_never_drop(pg):
    server, cur = pg
    run(server, cur, [tenant('alpha')])
    res = run(server, cur, [tenant('alpha', state='absent')], actions=['create', 'update'], force=True)
    assert res['changed'] is False and 'alpha' in databases(cur)


def test_only_limits_the_run(pg):
    server, cur = pg
    res = run(server, cur, [tenant('alpha'), tenant('bravo')], only=['bravo'])
    assert res['created'] == ['bravo'] and 'alpha' not in databases(cur)


# --------------------------------------------------------------------------- passwords

def test_scram_verifier_round_trip():
    v = tu.scram_verifier('secret-pass')
    assert tu.scram_matches(v, 'secret-pass') and not tu.scram_matches(v, 'other')
    assert not tu.scram_matches('md5abcdef', 'secret-pass') and not tu.scram_matches(None, 'x')
    assert tu.derive_password('seed-1', 'report', 'alpha') != tu.derive_password('seed-1', 'report', 'bravo')
    assert tu.derive_password('seed-1', 'app', 'alpha') != tu.derive_password('seed-1', 'report', 'alpha')
    assert len(tu.derive_password('seed-1', 'app', 'core')) == 32


# --------------------------------------------------------------------------- the module itself

def test_module_through_ansible_never_prints_secrets(pg, tmp_path):
    server, cur = pg
    collections = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..', '..', '..', '..', '..'))
    play = tmp_path / 'play.yml'
    args = dict(tenants=[tenant('alpha'), tenant('Bad Name')], plans=PLANS, groups=GROUPS, password_seed=SEED,
                login_unix_socket=server.socket_dir, login_port=server.port)
    good = dict(args, tenants=[tenant('alpha')])
    play.write_text(textwrap.dedent('''\
        - hosts: localhost
          gather_facts: false
          tasks:
            - name: bad list
              dine360.saas.tenants: %s
              register: bad
              failed_when: false
            - name: good list
              dine360.saas.tenants: %s
              register: good
            - name: again
              dine360.saas.tenants: %s
              register: again
            - ansible.builtin.assert:
                that:
                  - bad.errors | length == 1 and "saas_tenants[1] 'Bad Name'" in bad.msg
                  - good.changed and good.created == ['alpha']
                  - not again.changed
        ''') % (json.dumps(args), json.dumps(good), json.dumps(good)))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=collections, ANSIBLE_LOCALHOST_WARNING='false',
               ANSIBLE_INVENTORY_UNPARSED_WARNING='false', ANSIBLE_PYTHON_INTERPRETER=sys.executable)
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-v', '--diff',
                           str(play)], env=env, capture_output=True, text=True, timeout=300, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    for secret in [SEED, app_pw('core'), report_pw('alpha')]:
        assert secret not in out


def test_groups_of_other_clusters_are_left_alone(pg):
    server, cur = pg
    groups = dict(GROUPS, far=dict(app_role='u_odoo_far', db_cluster='other-cluster'))
    tenants = [tenant('alpha'), tenant('delta', group='far')]
    res = tu.reconcile(cur, lambda db: pgu.connect(server.params(), db), tenants, PLANS, groups, SEED,
                       cluster='this-cluster', auth_user='pgb_auth')
    assert res['created'] == ['alpha'] and 'delta' not in databases(cur)
    cur.execute("SELECT count(*) FROM pg_roles WHERE rolname = 'u_odoo_far'")
    assert cur.fetchone()[0] == 0
    res = tu.reconcile(cur, lambda db: pgu.connect(server.params(), db), tenants, PLANS, groups, SEED,
                       cluster='other-cluster', auth_user='pgb_auth')
    assert res['created'] == ['delta']


def test_a_large_first_run_holds_few_connections(pg):
    """Each new database's connection is closed before the next one is opened."""
    server, cur = pg
    opened, peak = [], [0]

    def connect_db(db):
        conn = pgu.connect(server.params(), db)
        opened.append(conn)
        peak[0] = max(peak[0], sum(1 for c in opened if not c.closed))
        return conn

    tenants = [tenant('bulk-%02d' % i) for i in range(12)]
    res = tu.reconcile(cur, connect_db, tenants, PLANS, GROUPS, SEED, auth_user='pgb_auth')
    assert len(res['created']) == 12
    assert len(opened) == 12 and peak[0] == 1 and all(c.closed for c in opened), peak


def test_a_failed_connection_reports_what_was_done(pg):
    server, cur = pg

    def refuse(db):
        raise psycopg2.OperationalError('too many clients already')

    with pytest.raises(psycopg2.OperationalError) as err:
        tu.reconcile(cur, refuse, [tenant('alpha')], PLANS, GROUPS, SEED, auth_user='pgb_auth')
    assert err.value.failed == 'connecting to database alpha'
    assert any(s.startswith('CREATE DATABASE "alpha"') for s in err.value.executed), err.value.executed
