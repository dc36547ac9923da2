# -*- coding: utf-8 -*-
# Copyright: (c) 2026, dine360.saas engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that turn the tenant list into checks, PgBouncer entries and passwords.

They share their rules with the ``dine360.saas.tenants`` module (module_utils/tenants.py),
so the controller-side preflight and the module can never disagree.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

from ansible.errors import AnsibleFilterError

from ansible_collections.dine360.saas.plugins.module_utils import tenants as _t


def tenant_list_errors(tenants, plans, groups, reserved=()):
    """Every problem with the tenant list, plans and groups (an empty list when valid)."""
    try:
        _t.validate(tenants, plans, groups, reserved)
    except _t.TenantError as e:
        return e.errors
    return []


def tenant_pgbouncer_databases(tenants, plans, default_pool_size):
    """[databases] entries for tenants whose plan's pool differs from the default.

    Every other tenant goes through PgBouncer's wildcard entry. Absent tenants and
    entries that fail validation are left out (the module reports those).
    """
    out = []
    for t in tenants or []:
        if not isinstance(t, dict) or t.get('state', 'present') == 'absent':
            continue
        plan = (plans or {}).get(t.get('plan'))
        if not isinstance(plan, dict) or not _t.NAME_RE.match(str(t.get('name', ''))):
            continue
        try:
            pool = int(plan['pool_size'])
        except (KeyError, TypeError, ValueError):
            continue
        if pool != int(default_pool_size):
            out.append({'name': t['name'], 'pool_size': pool,
                        'max_db_connections': int(plan.get('connection_limit', pool))})
    return sorted(out, key=lambda e: e['name'])


def tenant_password(seed, purpose, name):
    """The derived password of a group's role (purpose 'app'), a tenant's reporting role ('report')
    or a tenant's Odoo admin user ('odoo-admin')."""
    if purpose not in ('app', 'report', 'odoo-admin'):
        raise AnsibleFilterError("tenant_password: purpose must be 'app', 'report' or 'odoo-admin'")
    try:
        return _t.derive_password(seed, purpose, name)
    except ValueError as e:
        raise AnsibleFilterError('tenant_password: %s (set saas_password_seed in the vault)' % e)


def odoo_template_modules(tenants, plans, group, default_plan, base=()):
    """The modules of a group's template: the base modules plus those of every plan its tenants are on
    (the default plan's when it has none yet), sorted."""
    used = set(t.get('plan', default_plan) for t in tenants or []
               if isinstance(t, dict) and t.get('group') == group and t.get('state', 'present') != 'absent')
    if not used:
        used = set([default_plan])
    unknown = sorted(p for p in used if p not in (plans or {}))
    if unknown:
        raise AnsibleFilterError('odoo_template_modules: unknown plan(s) %s in group %s' % (', '.join(unknown), group))
    modules = set(base or ())
    for plan in used:
        modules.update(plans[plan].get('odoo_modules') or [])
    return sorted(modules)


def group_tenant_names(tenants, group, only=None):
    """Names of a group's tenants that are not absent, limited to ``only`` when it is not empty."""
    return [t['name'] for t in tenants or []
            if isinstance(t, dict) and t.get('group') == group and t.get('state', 'present') != 'absent'
            and (not only or t.get('name') in only)]


class FilterModule(object):
    def filters(self):
        return {
            'tenant_list_errors': tenant_list_errors,
            'tenant_pgbouncer_databases': tenant_pgbouncer_databases,
            'tenant_password': tenant_password,
            'odoo_template_modules': odoo_template_modules,
            'group_tenant_names': group_tenant_names,
        }
