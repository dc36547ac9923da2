#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, dine360.saas engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: tenants
short_description: Reconcile the whole tenant (restaurant) list with a PostgreSQL cluster in one call
version_added: 0.2.0
description:
  - Takes the complete tenant list, the plans and the groups, validates every entry first
    and changes nothing when one is bad (the error names each bad entry).
  - For each C(present) tenant, ensures a UTF8 database owned by its group's application
    role, created from C(template0) or from the group's template database when it exists;
    C(CONNECT) revoked from PUBLIC; a per-tenant read-only reporting role that can connect
    only to its own database, with default privileges so that it sees new tables; the
    plan's connection limit and settings (C(ALTER DATABASE ... SET)).
  - C(suspended) tenants have connections refused (C(ALLOW_CONNECTIONS false)) and their
    sessions ended; C(present) again restores them.
  - C(absent) tenants are dropped with their reporting role, only when a final backup is
    recorded in C(dine360.tenant_backups) or O(force) (or the entry's C(force)) is set.
  - Group application roles are created with passwords derived from O(password_seed);
    passwords reach the server only as SCRAM verifiers and never appear in the output.
  - Runs on one connection to the primary; a connection to a tenant database is opened only
    when objects inside it must change.
author:
  - dine360.saas engineers (@dine360)
extends_documentation_fragment:
  - dine360.saas.postgres
attributes:
  check_mode:
    support: full
    description: Nothing is changed; C(changed) and RV(statements) predict the run.
  diff_mode:
    support: full
    description: Before and after of every tenant that changes.
options:
  tenants:
    description:
      - The whole tenant list (C(saas_tenants)). Each entry has C(name) (a DNS label matching
        C(^[a-z][a-z0-9-]{0,39}[a-z0-9]$), with no hyphens in the third and fourth places),
        C(plan), C(group), C(state) (C(present), C(suspended) or C(absent); default
        C(present)), and optionally C(force) (drop without a final backup).
    type: list
    elements: raw
    required: true
  plans:
    description:
      - The plans (C(saas_plans)); per plan C(connection_limit), C(pool_size),
        C(statement_timeout), C(storage_quota_mb), C(backup_retention_days), and optionally
        C(reporting_connection_limit), C(settings) (more C(ALTER DATABASE SET) parameters)
        and C(odoo_modules).
    type: dict
    required: true
  groups:
    description:
      - The groups (C(saas_groups)); per group C(app_role), and optionally C(template_db)
        (default C(<group>-template)) and C(db_cluster) (the Patroni scope it lives on).
    type: dict
    required: true
  password_seed:
    description:
      - Secret from which the application and reporting role passwords are derived
        (C(saas_password_seed), from the vault).
    type: str
    required: true
  cluster:
    description:
      - Only groups whose C(db_cluster) equals this are managed here (the others are
        validated and skipped). Unset manages every group.
    type: str
  only:
    description:
      - Limit the changes to these tenants (the whole list is still validated).
    type: list
    elements: str
  actions:
    description:
      - What may be done. C(create) new databases, C(update) existing ones (limits, settings,
        roles, grants), C(suspend), C(resume), C(drop). The playbook maps its tags on these.
    type: list
    elements: str
    choices: [create, update, suspend, resume, drop]
    default: [create, update, suspend, resume, drop]
  force:
    description:
      - Drop C(absent) tenants even without a recorded final backup.
    type: bool
    default: false
  pgbouncer_auth_user:
    description:
      - The PgBouncer C(auth_user). When set, the C(pgbouncer.get_auth) lookup function is
        installed in every tenant database and the role may connect to it.
    type: str
  maintenance_roles:
    description:
      - Roles (besides the group roles and O(pgbouncer_auth_user)) that keep C(CONNECT) on
        C(postgres) and C(template1) when O(restrict_maintenance_databases) is on, for example
        the rewind user and monitoring roles.
    type: list
    elements: str
    default: []
  restrict_maintenance_databases:
    description:
      - Revoke C(CONNECT) on C(postgres) and C(template1) from PUBLIC, so that reporting roles
        reach only their own database.
    type: bool
    default: true
  reserved_names:
    description:
      - The platform's own host names under the domain, refused as tenant names (the role passes
        C(tenants_reserved_names)). Always refused besides these - C(postgres), C(template0),
        C(template1), C(pgbouncer), C(admin), C(dine360) and names ending in C(-template).
    type: list
    elements: str
    default: []
  require_templates:
    description:
      - For the groups that run Odoo (those with a C(release)), create a tenant database only as
        a clone of its group's template database, and refuse, naming the tenant, while the
        template is missing, instead of creating an empty database from C(template0).
      - Also checks every existing tenant database of those groups in scope for Odoo's tables. An empty one
        (created before its template existed) is dropped and cloned again from the template;
        one holding other relations is left alone and returned in RV(broken).
    type: bool
    default: false
    version_added: 0.5.0
notes:
  - The login role must be a superuser (C(postgres) over the Unix socket on the primary).
  - The whole C(settings) of a tenant database is managed; parameters not in the plan are reset.
'''

EXAMPLES = r'''
- name: Reconcile every tenant on the primary
  dine360.saas.tenants:
    tenants: "{{ saas_tenants }}"
    plans: "{{ saas_plans }}"
    groups: "{{ saas_groups }}"
    password_seed: "{{ saas_password_seed }}"
    pgbouncer_auth_user: pgbouncer_auth
    login_unix_socket: /var/run/postgresql
  become: true
  become_user: postgres

- name: Onboard one restaurant only (create, never drop)
  dine360.saas.tenants:
    tenants: "{{ saas_tenants }}"
    plans: "{{ saas_plans }}"
    groups: "{{ saas_groups }}"
    password_seed: "{{ saas_password_seed }}"
    only: [pizza-roma]
    actions: [create, update]
    login_unix_socket: /var/run/postgresql
'''

RETURN = r'''
statements:
  description: The statements executed (or, in check mode, that would be); passwords masked.
  returned: always
  type: list
  elements: str
  sample: ['CREATE DATABASE "pizza-roma" OWNER "odoo_core" TEMPLATE "template0" ENCODING ''UTF8'' CONNECTION LIMIT 20']
tenants:
  description: Per tenant in scope, what was done (created, updated, suspended, resumed, dropped, unchanged, absent).
  returned: always
  type: dict
created:
  description: Tenants whose database was created.
  returned: always
  type: list
  elements: str
updated:
  description: Tenants whose limits, settings, roles or grants were changed.
  returned: always
  type: list
  elements: str
suspended:
  description: Tenants suspended by this run.
  returned: always
  type: list
  elements: str
resumed:
  description: Tenants resumed by this run.
  returned: always
  type: list
  elements: str
dropped:
  description: Tenants whose database and roles were dropped.
  returned: always
  type: list
  elements: str
recloned:
  description: Tenants whose empty database (no Odoo) was dropped and cloned again from the template.
  returned: always
  type: list
  elements: str
broken:
  description: Tenants whose database holds relations but no Odoo; left alone (not to be routed).
  returned: always
  type: list
  elements: str
errors:
  description: Every bad entry or refused change, when the module fails.
  returned: failure
  type: list
  elements: str
'''

import traceback

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.dine360.saas.plugins.module_utils.postgres import (
    connect,
    ensure_required_libs,
    postgres_argument_spec,
)
from ansible_collections.dine360.saas.plugins.module_utils.tenants import (
    ACTIONS,
    TenantError,
    reconcile,
)


def main():
    argument_spec = postgres_argument_spec()
    argument_spec.update(
        tenants=dict(type='list', elements='raw', required=True),
        plans=dict(type='dict', required=True),
        groups=dict(type='dict', required=True),
        password_seed=dict(type='str', required=True, no_log=True),
        cluster=dict(type='str'),
        only=dict(type='list', elements='str'),
        actions=dict(type='list', elements='str', choices=list(ACTIONS), default=list(ACTIONS)),
        force=dict(type='bool', default=False),
        pgbouncer_auth_user=dict(type='str'),
        maintenance_roles=dict(type='list', elements='str', default=[]),
        restrict_maintenance_databases=dict(type='bool', default=True),
        reserved_names=dict(type='list', elements='str', default=[]),
        require_templates=dict(type='bool', default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    ensure_required_libs(module)
    p = module.params
    # A tenant may carry its Odoo admin password (from the vault): never echoed back.
    for t in p['tenants']:
        if isinstance(t, dict) and t.get('admin_password'):
            module.no_log_values.add(str(t['admin_password']))
    if len(p['password_seed']) < 16:
        module.fail_json(msg='password_seed is shorter than 16 characters: set saas_password_seed in the '
                             "environment's vault (the lab generates it)", errors=['password_seed too short'])

    conn = None
    try:
        conn = connect(p)
        result = reconcile(
            conn.cursor(), lambda db: connect(p, db), p['tenants'], p['plans'], p['groups'],
            p['password_seed'], check_mode=module.check_mode, only=p['only'], actions=p['actions'],
            cluster=p['cluster'], auth_user=p['pgbouncer_auth_user'], maintenance_roles=p['maintenance_roles'],
            restrict_maintenance=p['restrict_maintenance_databases'], force=p['force'],
            reserved_names=p['reserved_names'], require_templates=p['require_templates'])
    except TenantError as e:
        module.fail_json(msg='tenant list not applied, nothing was changed:\n- ' + '\n- '.join(e.errors),
                         errors=e.errors, changed=False)
    except Exception as e:  # a statement failed: report what had already been done
        module.fail_json(msg='%s%s' % (to_native(e).strip(),
                                       ' (while running: %s)' % e.failed if getattr(e, 'failed', None) else ''),
                         statements=getattr(e, 'executed', []), changed=bool(getattr(e, 'executed', [])),
                         exception=traceback.format_exc())
    finally:
        if conn is not None:
            conn.close()

    for warning in result.pop('warnings'):
        module.warn(warning)
    diff = result.pop('diff')
    if module._diff:
        result['diff'] = diff
    module.exit_json(**result)


if __name__ == '__main__':
    main()
