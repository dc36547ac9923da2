#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, dine360.saas engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: odoo_check
short_description: Prove that restaurants answer over HTTPS and that their admin logs in
version_added: 0.5.0
description:
  - For each restaurant, connects to O(address) with the TLS server name C(<tenant>.<domain>) (so the
    request takes the same path as a browser's, through the web VIP, HAProxy's certificate and tenant map
    Odoo behind it), checks that C(/web/login) answers 200 with Odoo's login form, then logs in as
    C(admin) with the restaurant's own password through C(/web/session/authenticate).
  - Retries each restaurant until O(timeout) (a new database's registry loads on its first request),
    checks up to O(parallel) restaurants at a time, and fails naming every restaurant that did not pass
    and why.
  - The admin password is the tenant's C(admin_password) when set, else derived from O(password_seed)
    (purpose C(odoo-admin)), as C(dine360.saas.odoo_tenants) set it. It never appears in the output.
author:
  - dine360.saas engineers (@dine360)
attributes:
  check_mode:
    support: full
    description: Only reads; runs in check mode too.
  diff_mode:
    support: none
    description: Nothing is changed.
options:
  tenants:
    description: The restaurants to check (C(saas_tenants) entries with at least C(name)).
    type: list
    elements: dict
    required: true
  domain:
    description: The environment's domain (C(saas_domain)); restaurant C(x) is C(https://x.<domain>/).
    type: str
    required: true
  address:
    description: Where to connect (the web VIP); empty resolves C(<tenant>.<domain>) by DNS.
    type: str
    default: ''
  port:
    description: HTTPS port.
    type: int
    default: 443
  ca_path:
    description: CA bundle that signs the web certificate; empty uses the system's.
    type: path
  password_seed:
    description: Secret from which admin passwords are derived (C(saas_password_seed)).
    type: str
    required: true
  timeout:
    description: Seconds one restaurant may take to pass, retries included.
    type: int
    default: 90
  parallel:
    description: Restaurants checked at the same time.
    type: int
    default: 4
'''

EXAMPLES = r'''
- name: Prove the onboarded restaurants answer and log in
  dine360.saas.odoo_check:
    tenants: "{{ saas_tenants | selectattr('name', 'in', ['pizza-roma']) }}"
    domain: "{{ saas_domain }}"
    address: 10.89.0.110
    ca_path: /usr/local/share/dine360/acme-test-ca.pem
    password_seed: "{{ saas_password_seed }}"
'''

RETURN = r'''
passed:
  description: Restaurants whose login page answered and whose admin logged in, with the seconds it took.
  returned: always
  type: dict
  sample: {pizza-roma: 0.8}
failed:
  description: Restaurants that did not pass, with the last reason.
  returned: always
  type: dict
  sample: {sushi-go: "/web/login answered 500"}
'''

import json
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.six.moves import http_client

from ansible_collections.dine360.saas.plugins.module_utils.tenants import derive_password


class _Conn(http_client.HTTPSConnection):
    """HTTPS to a fixed address with the tenant's host name as TLS server name and Host."""

    def __init__(self, address, port, server_name, context, timeout):
        http_client.HTTPSConnection.__init__(self, server_name, port, context=context, timeout=timeout)
        self._address = address

    def connect(self):
        sock = socket.create_connection((self._address or self.host, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def _request(p, context, host, method, path, body=None, headers=None):
    conn = _Conn(p['address'], p['port'], host, context, 15)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}, Host=host))
        resp = conn.getresponse()
        return resp.status, resp.read().decode('utf-8', 'replace')
    finally:
        conn.close()


def check_one(p, context, tenant):
    """(seconds, None) when the restaurant passes, (seconds, reason) when it did not in time."""
    name = tenant['name']
    host = '%s.%s' % (name, p['domain'])
    password = tenant.get('admin_password') or derive_password(p['password_seed'], 'odoo-admin', name)
    t0 = time.time()
    reason = 'not tried'
    while True:
        try:
            status, body = _request(p, context, host, 'GET', '/web/login')
            if status != 200 or 'oe_login_form' not in body:
                reason = '/web/login answered %d%s' % (status, '' if status != 200 else ' without a login form')
            else:
                payload = json.dumps(dict(jsonrpc='2.0', method='call', id=1,
                                          params=dict(db=name, login='admin', password=password)))
                status, body = _request(p, context, host, 'POST', '/web/session/authenticate', payload,
                                        {'Content-Type': 'application/json'})
                data = json.loads(body) if status == 200 else {}
                if (data.get('result') or {}).get('uid'):
                    return time.time() - t0, None
                error = (data.get('error') or {}).get('data', {}).get('message') or (data.get('error') or {}).get('message')
                reason = 'admin login refused (HTTP %d%s)' % (status, ': %s' % error if error else '')
        except (OSError, ssl.SSLError, ValueError, http_client.HTTPException) as exc:
            reason = '%s: %s' % (type(exc).__name__, exc)
        if time.time() - t0 >= p['timeout']:
            return time.time() - t0, reason
        time.sleep(1)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            tenants=dict(type='list', elements='dict', required=True),
            domain=dict(type='str', required=True),
            address=dict(type='str', default=''),
            port=dict(type='int', default=443),
            ca_path=dict(type='path'),
            password_seed=dict(type='str', required=True, no_log=True),
            timeout=dict(type='int', default=90),
            parallel=dict(type='int', default=4),
        ),
        supports_check_mode=True,
    )
    p = module.params
    for t in p['tenants']:
        if t.get('admin_password'):
            module.no_log_values.add(str(t['admin_password']))
        if not t.get('name'):
            module.fail_json(msg='every tenant needs a name: %r' % sorted(t))
    context = ssl.create_default_context(cafile=p['ca_path'] or None)
    passed, failed = {}, {}
    with ThreadPoolExecutor(max_workers=max(1, p['parallel'])) as pool:
        futures = dict((t['name'], pool.submit(check_one, p, context, t)) for t in p['tenants'])
        for name, future in futures.items():
            seconds, reason = future.result()
            if reason is None:
                passed[name] = round(seconds, 2)
            else:
                failed[name] = reason
    if failed:
        module.fail_json(
            msg='%d restaurant(s) do not answer at https://<name>.%s/ with a working admin login: %s'
                % (len(failed), p['domain'], '; '.join('%s: %s' % kv for kv in sorted(failed.items()))),
            passed=passed, failed=failed)
    module.exit_json(changed=False, passed=passed, failed=failed)


if __name__ == '__main__':
    main()
