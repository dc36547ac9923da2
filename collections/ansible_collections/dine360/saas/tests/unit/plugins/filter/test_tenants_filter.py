# -*- coding: utf-8 -*-
# Copyright: (c) 2026, dine360.saas engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of the tenant filters (PgBouncer entries, list checks, passwords)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os

import pytest
import yaml

from ansible.errors import AnsibleFilterError

from ansible_collections.dine360.saas.plugins.filter import tenants as f
from ansible_collections.dine360.saas.plugins.module_utils import tenants as _t

PLANS = {
    'starter': dict(connection_limit=20, pool_size=5, statement_timeout='60s', storage_quota_mb=1,
                    backup_retention_days=1),
    'premium': dict(connection_limit=80, pool_size=20, statement_timeout='60s', storage_quota_mb=1,
                    backup_retention_days=1),
}
GROUPS = {'core': dict(app_role='odoo_core', max_connections=150), 'vip': dict(app_role='odoo_vip')}


def test_only_tenants_off_the_default_pool_get_an_entry():
    tenants = [dict(name='a-one', plan='starter', group='core'),
               dict(name='b-two', plan='premium', group='core'),
               dict(name='c-gone', plan='premium', group='core', state='absent'),
               dict(name='d-sus', plan='premium', group='core', state='suspended')]
    assert f.tenant_pgbouncer_databases(tenants, PLANS, '5') == [
        {'name': 'b-two', 'pool_size': 20, 'max_db_connections': 80},
        {'name': 'd-sus', 'pool_size': 20, 'max_db_connections': 80},
    ]


def test_invalid_entries_never_reach_pgbouncer():
    tenants = [dict(name='x"; drop', plan='premium', group='core'), dict(name='ok-name', plan='nope')]
    assert f.tenant_pgbouncer_databases(tenants, PLANS, 5) == []


def test_list_errors_match_the_module():
    assert f.tenant_list_errors([dict(name='a-one', plan='starter', group='core')], PLANS, GROUPS) == []
    errors = f.tenant_list_errors([dict(name='Bad', plan='starter', group='core'),
                                   dict(name='www', plan='starter', group='core')], PLANS, GROUPS, ['www'])
    assert len(errors) == 2 and "'Bad'" in errors[0] and 'reserved' in errors[1]


@pytest.mark.parametrize('name, rule', [
    ('pizza-roma', None), ('ab', None), ('a' * 41, None), ('abc--d', None), ('a1-b2', None),
    ('a', '2 to 41 characters'), ('a' * 42, '2 to 41 characters'), ('', 'a name is required'),
    ('Pizza', 'lower-case letters'), ('pizza_roma', 'lower-case letters'), ('pizza roma', 'lower-case letters'),
    ('1pizza', 'starts with a letter'), ('-pizza', 'starts with a letter'), ('pizza-', 'end with a hyphen'),
    ('xn--pizza', "IDNA's xn--"), ('ab--c', "IDNA's xn--"),
    ('postgres', "PostgreSQL's maintenance database"), ('template0', 'pristine template'),
    ('template1', 'default template'), ('pgbouncer', "PgBouncer's admin console"), ('admin', 'administration'),
    ('dine360', 'catalog'), ('core-template', "groups' template databases"), ('new-template', "groups' template"),
    ('www', "platform's own host names"), ('status', "platform's own host names"), ('mail', "host names"),
])
def test_tenant_name_rules(name, rule):
    """A tenant name is a DNS label, not a name the tier or the platform's own hosts use; each refusal names its rule."""
    problem = _t.name_problem(name, _t.DEFAULT_RESERVED_HOST_NAMES)
    if rule is None:
        assert problem is None
    else:
        assert problem is not None and rule in problem, problem


def test_reserved_host_names_are_the_roles_default():
    """The module's list and the role's default tenants_reserved_names are the same list."""
    defaults = os.path.join(os.path.dirname(__file__), '..', '..', '..', '..', 'roles', 'tenants', 'defaults', 'main.yml')
    with open(defaults) as fh:
        assert tuple(yaml.safe_load(fh)['tenants_reserved_names']) == _t.DEFAULT_RESERVED_HOST_NAMES


def test_passwords():
    assert f.tenant_password('s' * 20, 'report', 'a-one') == f.tenant_password('s' * 20, 'report', 'a-one')
    with pytest.raises(AnsibleFilterError):
        f.tenant_password('', 'app', 'core')
    with pytest.raises(AnsibleFilterError):
        f.tenant_password('s' * 20, 'other', 'core')


# --------------------------------------------------------------------------- Odoo templates

ODOO_PLANS = {'starter': {'odoo_modules': ['pos_restaurant']},
              'standard': {'odoo_modules': ['pos_restaurant', 'account', 'stock']},
              'empty': {}}


def test_template_modules_are_the_union_of_the_groups_plans():
    tenants = [{'name': 'a', 'plan': 'starter', 'group': 'core'},
               {'name': 'b', 'plan': 'standard', 'group': 'core'},
               {'name': 'c', 'plan': 'standard', 'group': 'vip', 'state': 'present'}]
    assert f.odoo_template_modules(tenants[:1], ODOO_PLANS, 'core', 'starter', ['base', 'web']) == \
        ['base', 'pos_restaurant', 'web']
    assert f.odoo_template_modules(tenants, ODOO_PLANS, 'core', 'starter', ['base']) == \
        ['account', 'base', 'pos_restaurant', 'stock']


def test_template_modules_ignore_absent_tenants_and_default_to_the_default_plan():
    tenants = [{'name': 'gone', 'plan': 'standard', 'group': 'core', 'state': 'absent'}]
    assert f.odoo_template_modules(tenants, ODOO_PLANS, 'core', 'starter', ['base']) == ['base', 'pos_restaurant']
    assert f.odoo_template_modules([], ODOO_PLANS, 'core', 'empty', ['base']) == ['base']


def test_template_modules_name_an_unknown_plan():
    with pytest.raises(AnsibleFilterError, match='gold'):
        f.odoo_template_modules([{'name': 'a', 'plan': 'gold', 'group': 'core'}], ODOO_PLANS, 'core', 'starter')


def test_group_tenant_names():
    tenants = [{'name': 'a', 'group': 'core'}, {'name': 'b', 'group': 'core', 'state': 'absent'},
               {'name': 'c', 'group': 'vip'}, {'name': 'd', 'group': 'core', 'state': 'suspended'}]
    assert f.group_tenant_names(tenants, 'core') == ['a', 'd']
    assert f.group_tenant_names(tenants, 'core', ['d', 'c']) == ['d']


def test_odoo_admin_password_is_derived_and_distinct():
    seed = 'x' * 32
    a = f.tenant_password(seed, 'odoo-admin', 'pizza-roma')
    assert a == f.tenant_password(seed, 'odoo-admin', 'pizza-roma')
    assert a != f.tenant_password(seed, 'odoo-admin', 'sushi-go')
    assert a != f.tenant_password(seed, 'report', 'pizza-roma')
