#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, dine360.saas engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: odoo_template
short_description: Prepare and seal a group's Odoo template database, rebuilt when its release or modules change
version_added: 0.4.0
description:
  - A group's template database holds Odoo initialised once with the group's modules; each new
    restaurant is a C(CREATE DATABASE ... TEMPLATE) copy of it (seconds instead of minutes).
  - The database comment records what the template was built from (release, modules, demo). C(prepared)
    compares it with O(release), O(modules) and O(demo). When they match and the template is sealed,
    nothing changes. Otherwise the stale template is dropped and an empty database is created
    (owner O(owner), C(pg_trgm) installed, C(CONNECT) only for the owner); RV(build) tells the caller to
    initialise it with Odoo (C(odoo -d <name> -i <modules> --stop-after-init)).
  - C(sealed) writes the marker, marks the database as a template that accepts no connections and ends
    the sessions that the build left (PgBouncer's idle server connections), so it can be cloned.
  - Tenant databases cloned earlier are not touched by a rebuild.
author:
  - dine360.saas engineers (@dine360)
extends_documentation_fragment:
  - dine360.saas.postgres
attributes:
  check_mode:
    support: full
    description: Reports whether a rebuild is needed without dropping or creating anything.
  diff_mode:
    support: none
    description: The marker before and after is returned instead.
options:
  name:
    description: The template database (the group's C(template_db)).
    type: str
    required: true
  owner:
    description: Owner of the template (the group's C(app_role), which Odoo logs in as). Must exist.
    type: str
    required: true
  state:
    description:
      - C(prepared) makes sure an up-to-date sealed template exists or an empty one is ready to build.
      - C(sealed) seals a template that Odoo has just initialised.
      - C(absent) drops it.
    type: str
    choices: [prepared, sealed, absent]
    default: prepared
  release:
    description: The Odoo release the group runs (the odoo role's C(odoo_release_id)).
    type: str
    default: ''
  modules:
    description: The modules installed in the template.
    type: list
    elements: str
    default: []
  demo:
    description: Whether the template has demo data.
    type: bool
    default: false
  recipe:
    description:
      - How the template is finished after the modules are installed (for example its chart of
        accounts and compiled asset bundles), recorded in the marker; a different recipe rebuilds it.
    type: str
    default: ''
    version_added: 0.5.0
  pgbouncer_auth_user:
    description:
      - PgBouncer's C(auth_query) role. It gets C(CONNECT) and the C(pgbouncer.get_auth) lookup function
        in the template, so that Odoo can log in through PgBouncer to build it (the clones inherit both).
    type: str
    default: pgbouncer_auth
'''

EXAMPLES = r'''
- name: Make sure the core group's template is current
  dine360.saas.odoo_template:
    name: core-template
    owner: odoo_core
    release: "{{ odoo_release_id }}"
    modules: [base, web, pos_restaurant]
    login_unix_socket: /var/run/postgresql
  become: true
  become_user: postgres
  register: tmpl

- name: Seal it after `odoo -i ... --stop-after-init`
  dine360.saas.odoo_template:
    name: core-template
    owner: odoo_core
    state: sealed
    release: "{{ odoo_release_id }}"
    modules: [base, web, pos_restaurant]
    login_unix_socket: /var/run/postgresql
  become: true
  become_user: postgres
  when: tmpl.build
'''

RETURN = r'''
build:
  description: True when the template is empty and must be initialised by Odoo before it is sealed.
  returned: always
  type: bool
marker:
  description: The marker the template carries (or will carry once sealed).
  returned: always
  type: str
previous_marker:
  description: The marker found before this run (empty when there was no template).
  returned: always
  type: str
queries:
  description: The statements executed.
  returned: always
  type: list
  elements: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.dine360.saas.plugins.module_utils.postgres import (
    connect,
    ensure_required_libs,
    postgres_argument_spec,
)
from ansible_collections.dine360.saas.plugins.module_utils.odoo import template_marker
from ansible_collections.dine360.saas.plugins.module_utils.tenants import AUTH_FUNCTION_BODY

try:
    from psycopg2 import sql
except ImportError:  # reported by ensure_required_libs
    sql = None


def _state(cur, name):
    cur.execute("SELECT d.datistemplate, d.datallowconn, pg_catalog.shobj_description(d.oid, 'pg_database'),"
                " pg_catalog.pg_get_userbyid(d.datdba) FROM pg_catalog.pg_database d WHERE d.datname = %s", (name,))
    row = cur.fetchone()
    if row is None:
        return None
    return dict(is_template=row[0], allow_connections=row[1], comment=row[2] or '', owner=row[3])


def main():
    argument_spec = postgres_argument_spec()
    argument_spec.update(
        name=dict(type='str', required=True),
        owner=dict(type='str', required=True),
        state=dict(type='str', default='prepared', choices=['prepared', 'sealed', 'absent']),
        release=dict(type='str', default=''),
        modules=dict(type='list', elements='str', default=[]),
        demo=dict(type='bool', default=False),
        recipe=dict(type='str', default=''),
        pgbouncer_auth_user=dict(type='str', default='pgbouncer_auth'),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    ensure_required_libs(module)
    p = module.params
    name, owner, state = p['name'], p['owner'], p['state']
    marker = template_marker(p['release'], p['modules'], p['demo'], p['recipe'])
    if state != 'absent' and (not p['release'] or not p['modules']):
        module.fail_json(msg='odoo_template %s: release and modules are required for state=%s' % (name, state))
    queries = []
    ident = sql.Identifier(name)

    try:
        conn = connect(p)
    except Exception as exc:  # psycopg2.Error and socket errors
        module.fail_json(msg='cannot connect to PostgreSQL: %s' % exc)
    cur = conn.cursor()

    def run(stmt, args=None):
        queries.append(stmt.as_string(cur) if hasattr(stmt, 'as_string') else stmt)
        if not module.check_mode:
            cur.execute(stmt, args)

    def end_sessions():
        run(sql.SQL('SELECT count(pg_catalog.pg_terminate_backend(pid)) FROM pg_catalog.pg_stat_activity'
                    ' WHERE datname = {} AND pid <> pg_catalog.pg_backend_pid()').format(sql.Literal(name)))

    def drop():
        run(sql.SQL('ALTER DATABASE {} IS_TEMPLATE false ALLOW_CONNECTIONS false').format(ident))
        end_sessions()
        run(sql.SQL('DROP DATABASE {} WITH (FORCE)').format(ident))

    before = _state(cur, name)
    previous = before['comment'] if before else ''
    build = False
    try:
        if state == 'absent':
            if before is not None:
                drop()
        elif state == 'prepared':
            current = before is not None and before['is_template'] and previous == marker and before['owner'] == owner
            if not current:
                build = True
                if before is not None:
                    drop()
                run(sql.SQL("CREATE DATABASE {} OWNER {} TEMPLATE template0 ENCODING 'UTF8'").format(
                    ident, sql.Identifier(owner)))
                run(sql.SQL('REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC').format(ident))
                auth = sql.Identifier(p['pgbouncer_auth_user'])
                run(sql.SQL('GRANT CONNECT ON DATABASE {} TO {}').format(ident, auth))
                run(sql.SQL('COMMENT ON DATABASE {} IS {}').format(ident, sql.Literal('building: ' + marker)))
                inside = [
                    sql.SQL('CREATE EXTENSION IF NOT EXISTS pg_trgm'),
                    sql.SQL('CREATE SCHEMA IF NOT EXISTS pgbouncer'),
                    sql.SQL('REVOKE ALL ON SCHEMA pgbouncer FROM PUBLIC'),
                    sql.SQL('GRANT USAGE ON SCHEMA pgbouncer TO {}').format(auth),
                    sql.SQL('CREATE OR REPLACE FUNCTION pgbouncer.get_auth(p_usename text)'
                            ' RETURNS TABLE(usename name, passwd text) LANGUAGE sql STABLE SECURITY DEFINER'
                            ' SET search_path = pg_catalog AS $fn$' + AUTH_FUNCTION_BODY + '$fn$'),
                    sql.SQL('REVOKE ALL ON FUNCTION pgbouncer.get_auth(text) FROM PUBLIC'),
                    sql.SQL('GRANT EXECUTE ON FUNCTION pgbouncer.get_auth(text) TO {}').format(auth),
                ]
                tconn = None if module.check_mode else connect(p, dbname=name)
                try:
                    for stmt in inside:
                        queries.append('%s (in %s)' % (stmt.as_string(cur), name))
                        if tconn is not None:
                            tconn.cursor().execute(stmt)
                finally:
                    if tconn is not None:
                        tconn.close()
        else:  # sealed
            if before is None:
                module.fail_json(msg='odoo_template %s: the database does not exist; run state=prepared and build it first' % name)
            if not (before['is_template'] and not before['allow_connections'] and previous == marker):
                run(sql.SQL('COMMENT ON DATABASE {} IS {}').format(ident, sql.Literal(marker)))
                run(sql.SQL('ALTER DATABASE {} IS_TEMPLATE true ALLOW_CONNECTIONS false').format(ident))
                end_sessions()
    except Exception as exc:  # psycopg2.Error
        module.fail_json(msg='odoo_template %s: %s' % (name, exc), queries=queries)
    finally:
        conn.close()

    module.exit_json(changed=bool(queries), build=build, marker=marker, previous_marker=previous, queries=queries)


if __name__ == '__main__':
    main()
