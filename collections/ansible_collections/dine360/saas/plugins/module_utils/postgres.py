# -*- coding: utf-8 -*-
# Copyright: (c) 2026, dine360.saas engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Connection helpers shared by the dine360.saas PostgreSQL modules.

One argument spec (merged into every module, documented by the doc fragment
``dine360.saas.postgres``) and one ``connect()`` helper.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import traceback

from ansible.module_utils.basic import missing_required_lib

PSYCOPG2_IMP_ERR = None
try:
    import psycopg2
    HAS_PSYCOPG2 = True
except ImportError:
    psycopg2 = None
    HAS_PSYCOPG2 = False
    PSYCOPG2_IMP_ERR = traceback.format_exc()


def postgres_argument_spec():
    """The connection options every module accepts."""
    return dict(
        login_user=dict(type='str', default='postgres', aliases=['login']),
        login_password=dict(type='str', default='', no_log=True),
        login_host=dict(type='str', default=''),
        login_unix_socket=dict(type='path', default=''),
        login_port=dict(type='int', default=5432),
        login_db=dict(type='str', default='postgres'),
        connect_timeout=dict(type='int', default=10),
    )


def ensure_required_libs(module):
    """Fail with the standard message when psycopg2 is missing on the target."""
    if not HAS_PSYCOPG2:
        module.fail_json(msg=missing_required_lib('psycopg2'), exception=PSYCOPG2_IMP_ERR)


def connection_params(params, dbname=None):
    """libpq keyword arguments from module params (the password is never logged)."""
    kw = {
        'user': params['login_user'],
        'port': params['login_port'],
        'dbname': dbname or params['login_db'],
        'connect_timeout': params['connect_timeout'],
        'application_name': 'dine360.saas',
    }
    host = params['login_unix_socket'] or params['login_host']
    if host:
        kw['host'] = host
    if params['login_password']:
        kw['password'] = params['login_password']
    return kw


def connect(params, dbname=None):
    """Open an autocommit connection (CREATE/DROP DATABASE cannot run in a transaction)."""
    conn = psycopg2.connect(**connection_params(params, dbname))
    conn.autocommit = True
    return conn
