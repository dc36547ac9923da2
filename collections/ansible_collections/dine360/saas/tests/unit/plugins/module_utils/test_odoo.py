# -*- coding: utf-8 -*-
# Copyright: (c) 2026, dine360.saas engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Odoo helpers: admin password hashes are checked by passlib configured as Odoo 17 does."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import json

import pytest

from ansible_collections.dine360.saas.plugins.module_utils import odoo as ou

passlib_context = pytest.importorskip('passlib.context')

# res.users._crypt_context() in Odoo 17 (odoo/addons/base/models/res_users.py).
ODOO_CONTEXT = passlib_context.CryptContext(['pbkdf2_sha512', 'plaintext'], deprecated=['auto'],
                                            pbkdf2_sha512__rounds=600000)


def test_odoo_verifies_our_hash_and_does_not_want_to_rehash_it():
    stored = ou.hash_password('Tr0ub4dor&3')
    assert stored.startswith('$pbkdf2-sha512$600000$')
    assert ODOO_CONTEXT.verify('Tr0ub4dor&3', stored)
    assert not ODOO_CONTEXT.verify('Tr0ub4dor&4', stored)
    assert not ODOO_CONTEXT.needs_update(stored)


def test_we_verify_odoos_hash():
    stored = ODOO_CONTEXT.hash('correct horse')
    assert ou.verify_password('correct horse', stored)
    assert not ou.verify_password('correct horsE', stored)
    assert not ou.verify_password('x', 'plaintext-value')


def test_each_hash_has_its_own_salt():
    assert ou.hash_password('same') != ou.hash_password('same')


def test_company_name_from_tenant():
    assert ou.company_name({'name': 'pizza-roma'}) == 'Pizza Roma'
    assert ou.company_name({'name': 'pizza-roma', 'company': 'Pizzeria Roma SRL'}) == 'Pizzeria Roma SRL'


def test_template_marker_is_order_independent_and_names_what_matters():
    a = ou.template_marker('g5a953f3dd600', ['web', 'pos_restaurant', 'base', 'web'])
    b = ou.template_marker('g5a953f3dd600', ['base', 'pos_restaurant', 'web'])
    assert a == b
    assert json.loads(a)['modules'] == ['base', 'pos_restaurant', 'web']
    assert ou.template_marker('other', ['base']) != ou.template_marker('g5a953f3dd600', ['base'])
    assert ou.template_marker('r', ['base'], demo=True) != ou.template_marker('r', ['base'])
    assert ou.template_marker('r', ['base'], recipe='chart=generic_coa') != ou.template_marker('r', ['base'])
    assert ou.template_marker('r', ['base'], recipe='') == ou.template_marker('r', ['base'])


def test_new_identity_is_fresh_each_time():
    one, two = ou.new_identity(), ou.new_identity()
    assert one['database.uuid'] != two['database.uuid']
    assert one['database.secret'] != two['database.secret']
