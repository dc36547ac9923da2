#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, dine360.saas engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: odoo_tenants
short_description: Give restaurants cloned from a group template their own Odoo identity
version_added: 0.4.0
description:
  - A restaurant's database is a copy of its group's template (C(dine360.saas.tenants) clones it). This
    module gives each copy what it must not share with the template or its siblings, once, in one
    transaction per database - a new C(database.uuid) and C(database.secret), its creation date, its
    admin password, its company name and C(web.base.url) on C(https://<tenant>.<domain>) (frozen) - and
    records the tenant's name in C(ir.config_parameter) C(dine360.tenant).
  - A database already personalised for its tenant is left alone, except that C(web.base.url) follows
    O(domain) and the company name follows an explicit C(company). A database without Odoo tables
    (created before its group's template existed) is reported in RV(uninitialized) and not changed.
  - The admin password is the tenant's C(admin_password) when set, else derived from O(password_seed)
    (purpose C(odoo-admin); the filter C(dine360.saas.tenant_password) gives it to the operator). Only
    its pbkdf2-sha512 hash reaches the database; it never appears in the output.
author:
  - dine360.saas engineers (@dine360)
extends_documentation_fragment:
  - dine360.saas.postgres
attributes:
  check_mode:
    support: full
    description: Reads every database and reports what would be personalised.
  diff_mode:
    support: none
    description: The personalised tenants are listed in the result.
options:
  tenants:
    description:
      - The restaurants (C(saas_tenants) entries). Those with C(state=absent) are ignored; a tenant
        whose database does not exist is reported in RV(missing).
    type: list
    elements: dict
    required: true
  domain:
    description: The environment's domain (C(saas_domain)).
    type: str
    required: true
  password_seed:
    description: Secret from which admin passwords are derived (C(saas_password_seed)).
    type: str
    required: true
  only:
    description: Limit the run to these tenant names (empty is every tenant).
    type: list
    elements: str
    default: []
'''

EXAMPLES = r'''
- name: Personalise the restaurants cloned by this run
  dine360.saas.odoo_tenants:
    tenants: "{{ saas_tenants }}"
    domain: "{{ saas_domain }}"
    password_seed: "{{ saas_password_seed }}"
    login_unix_socket: /var/run/postgresql
  become: true
  become_user: postgres
'''

RETURN = r'''
personalized:
  description: Tenants given their identity by this run.
  returned: always
  type: list
  elements: str
updated:
  description: Tenants whose web.base.url or company name was brought in line.
  returned: always
  type: list
  elements: str
uninitialized:
  description: Tenants whose database has no Odoo tables (cloned before the template existed).
  returned: always
  type: list
  elements: str
missing:
  description: Present tenants without a database.
  returned: always
  type: list
  elements: str
'''

import datetime

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.dine360.saas.plugins.module_utils.postgres import (
    connect,
    ensure_required_libs,
    postgres_argument_spec,
)
from ansible_collections.dine360.saas.plugins.module_utils.odoo import (
    TENANT_PARAM,
    company_name,
    hash_password,
    new_identity,
)
from ansible_collections.dine360.saas.plugins.module_utils.tenants import derive_password

SET_PARAM = ('INSERT INTO ir_config_parameter (key, value, create_uid, write_uid, create_date, write_date)'
             " VALUES (%s, %s, 1, 1, now() at time zone 'UTC', now() at time zone 'UTC')"
             " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, write_date = now() at time zone 'UTC'")
ADMIN_ID = "(SELECT res_id FROM ir_model_data WHERE module = 'base' AND name = 'user_admin')"
COMPANY_ID = "(SELECT res_id FROM ir_model_data WHERE module = 'base' AND name = 'main_company')"


def _params(cur, keys):
    cur.execute('SELECT key, value FROM ir_config_parameter WHERE key = ANY(%s)', (list(keys),))
    return dict(cur.fetchall())


def _company(cur):
    cur.execute('SELECT name FROM res_company WHERE id = ' + COMPANY_ID)
    row = cur.fetchone()
    return row[0] if row else None


def _set_company(cur, name):
    cur.execute('UPDATE res_partner SET name = %s WHERE id = (SELECT partner_id FROM res_company WHERE id = '
                + COMPANY_ID + ')', (name,))
    cur.execute('UPDATE res_company SET name = %s WHERE id = ' + COMPANY_ID, (name,))


def personalize(cur, tenant, domain, seed):
    """Give one freshly cloned database its identity (inside the caller's transaction)."""
    values = new_identity()
    values['database.create_date'] = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M:%S')
    values['web.base.url'] = 'https://%s.%s' % (tenant['name'], domain)
    values['web.base.url.freeze'] = 'True'
    values[TENANT_PARAM] = tenant['name']
    for key, value in sorted(values.items()):
        cur.execute(SET_PARAM, (key, value))
    password = tenant.get('admin_password') or derive_password(seed, 'odoo-admin', tenant['name'])
    cur.execute('UPDATE res_users SET password = %s WHERE id = ' + ADMIN_ID, (hash_password(password),))
    _set_company(cur, company_name(tenant))


def main():
    argument_spec = postgres_argument_spec()
    argument_spec.update(
        tenants=dict(type='list', elements='dict', required=True),
        domain=dict(type='str', required=True),
        password_seed=dict(type='str', required=True, no_log=True),
        only=dict(type='list', elements='str', default=[]),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    ensure_required_libs(module)
    p = module.params
    if len(p['password_seed']) < 16:
        module.fail_json(msg='password_seed is shorter than 16 characters: set saas_password_seed in the vault')
    for t in p['tenants']:
        if t.get('admin_password'):
            module.no_log_values.add(t['admin_password'])
    result = dict(personalized=[], updated=[], uninitialized=[], missing=[])
    try:
        conn = connect(p)
    except Exception as exc:  # psycopg2.Error and socket errors
        module.fail_json(msg='cannot connect to PostgreSQL: %s' % exc)
    try:
        cur = conn.cursor()
        cur.execute('SELECT datname, datallowconn FROM pg_catalog.pg_database')
        dbs = dict(cur.fetchall())
    finally:
        conn.close()

    for tenant in p['tenants']:
        name = tenant.get('name')
        if tenant.get('state', 'present') == 'absent' or (p['only'] and name not in p['only']):
            continue
        if name not in dbs:
            result['missing'].append(name)
            continue
        if not dbs[name]:
            continue  # suspended: connections are refused; personalised when resumed
        try:
            tconn = connect(p, dbname=name)
        except Exception as exc:
            module.fail_json(msg='tenant %s: cannot connect: %s' % (name, exc), **result)
        try:
            tconn.autocommit = False
            cur = tconn.cursor()
            cur.execute("SELECT to_regclass('public.ir_config_parameter') IS NOT NULL")
            if not cur.fetchone()[0]:
                result['uninitialized'].append(name)
                continue
            current = _params(cur, [TENANT_PARAM, 'web.base.url'])
            base_url = 'https://%s.%s' % (name, p['domain'])
            if current.get(TENANT_PARAM) != name:
                result['personalized'].append(name)
                if not module.check_mode:
                    personalize(cur, tenant, p['domain'], p['password_seed'])
            else:
                wanted_company = tenant.get('company')
                drift = current.get('web.base.url') != base_url or (wanted_company and _company(cur) != wanted_company)
                if drift:
                    result['updated'].append(name)
                    if not module.check_mode:
                        cur.execute(SET_PARAM, ('web.base.url', base_url))
                        if wanted_company:
                            _set_company(cur, wanted_company)
            if module.check_mode:
                tconn.rollback()
            else:
                tconn.commit()
        except Exception as exc:  # psycopg2.Error
            tconn.rollback()
            module.fail_json(msg='tenant %s: personalisation failed, nothing was changed in it: %s' % (name, exc), **result)
        finally:
            tconn.close()

    if result['uninitialized']:
        module.warn('%d tenant database(s) have no Odoo tables (created before their group template existed): %s'
                    % (len(result['uninitialized']), ', '.join(result['uninitialized'])))
    module.exit_json(changed=bool(result['personalized'] or result['updated']), **result)


if __name__ == '__main__':
    main()
