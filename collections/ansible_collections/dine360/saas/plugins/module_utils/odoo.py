# -*- coding: utf-8 -*-
# Copyright: (c) 2026, dine360.saas engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Odoo database facts shared by the odoo_template and odoo_tenants modules.

Odoo is never imported here: these helpers run on the database nodes, where Odoo is
not installed, and touch only the few rows a clone of a template must not share.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import base64
import hashlib
import json
import os
import uuid

# Odoo 17's res.users hashes with passlib's pbkdf2_sha512 and at least 600,000 rounds.
ODOO_PBKDF2_ROUNDS = 600000
# The ir.config_parameter key that says which tenant a database was personalised for.
TENANT_PARAM = 'dine360.tenant'


def _ab64(raw):
    """passlib's "adapted base64": standard alphabet with '.' for '+', no padding."""
    return base64.b64encode(raw).decode('ascii').replace('+', '.').rstrip('=')


def _ab64_decode(text):
    text = text.replace('.', '+')
    return base64.b64decode(text + '=' * (-len(text) % 4))


def hash_password(password, rounds=ODOO_PBKDF2_ROUNDS, salt=None):
    """A hash Odoo's CryptContext verifies: $pbkdf2-sha512$<rounds>$<salt>$<checksum>."""
    salt = salt if salt is not None else os.urandom(16)
    checksum = hashlib.pbkdf2_hmac('sha512', password.encode('utf-8'), salt, rounds)
    return '$pbkdf2-sha512$%d$%s$%s' % (rounds, _ab64(salt), _ab64(checksum))


def verify_password(password, stored):
    """True when ``stored`` (a pbkdf2-sha512 hash as written by hash_password or Odoo) matches."""
    try:
        _empty, scheme, rounds, salt, checksum = stored.split('$')
    except (AttributeError, ValueError):
        return False
    if scheme != 'pbkdf2-sha512':
        return False
    got = hashlib.pbkdf2_hmac('sha512', password.encode('utf-8'), _ab64_decode(salt), int(rounds))
    return got == _ab64_decode(checksum)


def company_name(tenant):
    """The tenant's company name: its own ``company`` or its name in title case."""
    return tenant.get('company') or ' '.join(p.capitalize() for p in tenant['name'].split('-'))


def template_marker(release, modules, demo=False, recipe=''):
    """What a template database was built from, stored as its database comment; ``recipe``
    names how it was finished (chart of accounts, compiled assets), when the caller says."""
    marker = dict(kind='dine360-odoo-template', release=str(release), modules=sorted(set(modules)), demo=bool(demo))
    if recipe:
        marker['recipe'] = str(recipe)
    return json.dumps(marker, sort_keys=True)


def new_identity():
    """Values a clone must not share with its template or its siblings."""
    return {'database.uuid': str(uuid.uuid4()), 'database.secret': str(uuid.uuid4())}
