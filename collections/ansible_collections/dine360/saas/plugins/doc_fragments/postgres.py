# -*- coding: utf-8 -*-
# Copyright: (c) 2026, dine360.saas engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type


class ModuleDocFragment(object):
    # Connection options shared by the dine360.saas PostgreSQL modules.
    DOCUMENTATION = r'''
options:
  login_user:
    description:
      - The role to connect as. Tenant reconciliation needs a superuser (it reads
        C(pg_authid) to compare password verifiers).
    type: str
    default: postgres
    aliases: [login]
  login_password:
    description:
      - The password of O(login_user). Empty with peer authentication over the Unix socket.
    type: str
    default: ''
  login_host:
    description:
      - Host to connect to. Ignored when O(login_unix_socket) is set.
    type: str
    default: ''
  login_unix_socket:
    description:
      - Directory of the PostgreSQL Unix socket, for example C(/var/run/postgresql).
    type: path
    default: ''
  login_port:
    description:
      - PostgreSQL port.
    type: int
    default: 5432
  login_db:
    description:
      - Database of the main connection.
    type: str
    default: postgres
  connect_timeout:
    description:
      - Seconds to wait for a connection.
    type: int
    default: 10
requirements:
  - psycopg2 on the managed node
'''
