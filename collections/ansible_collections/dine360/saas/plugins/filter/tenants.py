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
    """The derived password of a group's role (purpose 'app') or a tenant's reporting role ('report')."""
    if purpose not in ('app', 'report'):
        raise AnsibleFilterError("tenant_password: purpose must be 'app' or 'report'")
    try:
        return _t.derive_password(seed, purpose, name)
    except ValueError as e:
        raise AnsibleFilterError('tenant_password: %s (set saas_password_seed in the vault)' % e)


class FilterModule(object):
    def filters(self):
        return {
            'tenant_list_errors': tenant_list_errors,
            'tenant_pgbouncer_databases': tenant_pgbouncer_databases,
            'tenant_password': tenant_password,
        }
