# -*- coding: utf-8 -*-
# Copyright: (c) 2026, dine360.saas engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""odoo_template and odoo_tenants run as Ansible runs them (a module process with its
arguments file) against a real PostgreSQL 15 (fixture ``pg_server``).

Odoo itself is not here: the template's "build" is the few tables and rows of Odoo's
schema that odoo_tenants reads and writes (ir_config_parameter, ir_model_data, res_users,
res_company, res_partner), with Odoo's column names and unique key. The whole path with a
real Odoo is tests/ha/test_odoo.py.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json
import os
import subprocess
import sys

import pytest

from ansible_collections.dine360.saas.plugins.module_utils import postgres as pgu
from ansible_collections.dine360.saas.plugins.module_utils.odoo import verify_password
from ansible_collections.dine360.saas.plugins.module_utils.tenants import derive_password

SEED = 'unit-test-seed-0123456789abcdef'
COLLECTIONS = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..', '..', '..', '..', '..'))
ODOO_SCHEMA = """
CREATE TABLE ir_config_parameter (id serial PRIMARY KEY, key varchar NOT NULL, value text NOT NULL,
    create_uid int, write_uid int, create_date timestamp, write_date timestamp,
    CONSTRAINT ir_config_parameter_key_uniq UNIQUE (key));
CREATE TABLE ir_model_data (id serial PRIMARY KEY, module varchar, name varchar, model varchar, res_id int);
CREATE TABLE res_partner (id serial PRIMARY KEY, name varchar);
CREATE TABLE res_company (id serial PRIMARY KEY, name varchar, partner_id int);
CREATE TABLE res_users (id serial PRIMARY KEY, login varchar, password varchar);
INSERT INTO res_partner (id, name) VALUES (1, 'My Company');
INSERT INTO res_company (id, name, partner_id) VALUES (1, 'My Company', 1);
INSERT INTO res_users (id, login, password) VALUES (1, '__system__', ''), (2, 'admin', 'template-hash');
INSERT INTO ir_model_data (module, name, model, res_id) VALUES
    ('base', 'main_company', 'res.company', 1), ('base', 'user_admin', 'res.users', 2);
INSERT INTO ir_config_parameter (key, value) VALUES ('database.uuid', 'template-uuid'),
    ('web.base.url', 'http://localhost:8069');
"""


def run_module(name, args, tmp_path, check_mode=False):
    args = dict(args, _ansible_check_mode=check_mode)
    path = tmp_path / ('%s-args.json' % name)
    path.write_text(json.dumps({'ANSIBLE_MODULE_ARGS': args}))
    p = subprocess.run([sys.executable, '-m', 'ansible_collections.dine360.saas.plugins.modules.%s' % name, str(path)],
                       capture_output=True, text=True, timeout=120, check=False,
                       env=dict(os.environ, PYTHONPATH=COLLECTIONS + os.pathsep + os.environ.get('PYTHONPATH', '')))
    return json.loads(p.stdout)


DATABASES = ('tpl-core', 'resto-a', 'resto-b')
ROLES = ('u_odoo_tpl', 'pgb_auth_tpl')


def _clean(cur):
    """Drop what these tests make (a sealed template too), so that no other test finds it."""
    for db in DATABASES:
        if _exists(cur, db):
            cur.execute('ALTER DATABASE "%s" IS_TEMPLATE false' % db)
            cur.execute('DROP DATABASE "%s" WITH (FORCE)' % db)
    for role in ROLES:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
        if cur.fetchone():
            cur.execute('DROP OWNED BY "%s"' % role)
            cur.execute('DROP ROLE "%s"' % role)


@pytest.fixture
def pg(pg_server):
    conn = pgu.connect(pg_server.params())
    cur = conn.cursor()
    _clean(cur)
    cur.execute('CREATE ROLE u_odoo_tpl LOGIN')
    cur.execute('CREATE ROLE pgb_auth_tpl LOGIN')
    yield pg_server, cur
    _clean(cur)
    conn.close()


def _exists(cur, db):
    cur.execute('SELECT 1 FROM pg_database WHERE datname = %s', (db,))
    return cur.fetchone() is not None


def _template_args(server, **kw):
    a = dict(server.params(), name='tpl-core', owner='u_odoo_tpl', release='g5a953f3dd600',
             modules=['base', 'web', 'pos_restaurant'], pgbouncer_auth_user='pgb_auth_tpl')
    a.update(kw)
    return a


def _build(server):
    """What `odoo -i` leaves in the template, reduced to the rows odoo_tenants touches."""
    conn = pgu.connect(server.params(), 'tpl-core')
    conn.cursor().execute(ODOO_SCHEMA)
    conn.close()


def test_template_prepare_build_seal_and_rebuild(pg, tmp_path):
    server, cur = pg
    first = run_module('odoo_template', _template_args(server), tmp_path)
    assert first['changed'] and first['build'], first
    cur.execute("SELECT datistemplate, datallowconn, pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'tpl-core'")
    assert cur.fetchone() == (False, True, 'u_odoo_tpl')
    # PgBouncer's lookup role can log in to build it; the public cannot.
    cur.execute("SELECT has_database_privilege('pgb_auth_tpl', 'tpl-core', 'CONNECT'),"
                " has_database_privilege('public', 'tpl-core', 'CONNECT')")
    assert cur.fetchone() == (True, False)
    _build(server)
    sealed = run_module('odoo_template', _template_args(server, state='sealed'), tmp_path)
    assert sealed['changed'], sealed
    cur.execute("SELECT datistemplate, datallowconn, shobj_description(oid, 'pg_database') FROM pg_database"
                " WHERE datname = 'tpl-core'")
    is_tpl, allow, comment = cur.fetchone()
    assert is_tpl and not allow and json.loads(comment)['release'] == 'g5a953f3dd600'

    again = run_module('odoo_template', _template_args(server), tmp_path)
    assert not again['changed'] and not again['build'], 'a current template was touched: %s' % again
    assert not run_module('odoo_template', _template_args(server, state='sealed'), tmp_path)['changed']

    # A new release: check mode predicts the rebuild and changes nothing; the real run rebuilds.
    predicted = run_module('odoo_template', _template_args(server, release='gNEW'), tmp_path, check_mode=True)
    assert predicted['changed'] and predicted['build']
    cur.execute("SELECT datistemplate FROM pg_database WHERE datname = 'tpl-core'")
    assert cur.fetchone() == (True,)
    rebuilt = run_module('odoo_template', _template_args(server, release='gNEW'), tmp_path)
    assert rebuilt['build'] and any('DROP DATABASE' in q for q in rebuilt['queries'])
    conn = pgu.connect(server.params(), 'tpl-core')
    c = conn.cursor()
    c.execute("SELECT to_regclass('public.res_users')")
    assert c.fetchone() == (None,), 'the rebuilt template still has the old tables'
    conn.close()


def test_sealing_a_missing_template_says_what_to_do(pg, tmp_path):
    server, _cur = pg
    out = run_module('odoo_template', _template_args(server, state='sealed'), tmp_path)
    assert out.get('failed') and 'state=prepared' in out['msg']


def test_clones_get_their_own_identity_once(pg, tmp_path):
    server, cur = pg
    run_module('odoo_template', _template_args(server), tmp_path)
    _build(server)
    run_module('odoo_template', _template_args(server, state='sealed'), tmp_path)
    for db in ('resto-a', 'resto-b'):
        cur.execute('CREATE DATABASE "%s" TEMPLATE "tpl-core" OWNER u_odoo_tpl' % db)
    tenants = [dict(name='resto-a', plan='starter', group='core', company='Trattoria A'),
               dict(name='resto-b', plan='starter', group='core', admin_password='Given-Admin-Pw-123'),
               dict(name='resto-gone', plan='starter', group='core', state='absent'),
               dict(name='resto-missing', plan='starter', group='core')]
    args = dict(server.params(), tenants=tenants, domain='dine360.test', password_seed=SEED)

    predicted = run_module('odoo_tenants', args, tmp_path, check_mode=True)
    assert predicted['changed'] and predicted['personalized'] == ['resto-a', 'resto-b']
    out = run_module('odoo_tenants', args, tmp_path)
    assert out['personalized'] == ['resto-a', 'resto-b'] and out['missing'] == ['resto-missing'], out
    assert 'Given-Admin-Pw-123' not in json.dumps(out) and derive_password(SEED, 'odoo-admin', 'resto-a') not in json.dumps(out)

    seen = {}
    for db, company, password in (('resto-a', 'Trattoria A', derive_password(SEED, 'odoo-admin', 'resto-a')),
                                  ('resto-b', 'Resto B', 'Given-Admin-Pw-123')):
        conn = pgu.connect(server.params(), db)
        c = conn.cursor()
        c.execute("SELECT key, value FROM ir_config_parameter")
        params = dict(c.fetchall())
        assert params['dine360.tenant'] == db
        assert params['web.base.url'] == 'https://%s.dine360.test' % db
        assert params['web.base.url.freeze'] == 'True'
        assert params['database.uuid'] not in ('template-uuid', seen.get('uuid'))
        seen['uuid'] = params['database.uuid']
        c.execute("SELECT c.name, p.name FROM res_company c JOIN res_partner p ON p.id = c.partner_id")
        assert c.fetchone() == (company, company)
        c.execute("SELECT password FROM res_users WHERE login = 'admin'")
        assert verify_password(password, c.fetchone()[0])
        conn.close()

    again = run_module('odoo_tenants', args, tmp_path)
    assert not again['changed'], 'a personalised restaurant was personalised again: %s' % again

    # A new domain moves web.base.url, nothing else.
    moved = run_module('odoo_tenants', dict(args, domain='example.org'), tmp_path)
    assert moved['updated'] == ['resto-a', 'resto-b'] and not moved['personalized']
