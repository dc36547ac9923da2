"""playbooks/app_tier.yml: bad input stops the run in preflight, with a message naming the variable.

Runs the real playbook with `--tags preflight` against a throwaway inventory whose hosts use
the local connection (nothing is installed anywhere): the app servers' Odoo checks, the web
balancers' certbot and keepalived checks, and the Redis checks.
"""
import pytest

from preflight_run import run_preflight
ADMIN = 'Od00-master-' + 'x' * 20
TSIG = 'T' * 44


def run(tmp_path, overrides=None, drop=()):
    source = tmp_path / 'odoo-src'
    (source / 'odoo').mkdir(parents=True, exist_ok=True)
    (source / 'odoo' / 'release.py').write_text("version_info = (17, 0, 0, 'final', 0, '')\n")
    names = ['a1', 'a2', 'a3']
    hosts = {n: {'dine360_node_address': '127.0.97.%d' % (i + 10)} for i, n in enumerate(names)}
    children = {'app_servers': {'hosts': {n: None for n in names[:2]}},
                'web_balancers': {'hosts': {n: None for n in names[:2]}},
                'redis_cluster': {'hosts': {n: None for n in names}},
                'nodes': {'hosts': hosts}}
    gv = {'saas_domain': 'restaurants.example.com', 'saas_password_seed': 'Z' * 40,
          'odoo_admin_passwd': ADMIN, 'odoo_source': str(source), 'odoo_db_host': '127.0.97.100',
          'redis_password': 'Rr7' * 8,
          'certbot_dns_provider': 'rfc2136', 'certbot_rfc2136_server': '127.0.97.53',
          'certbot_rfc2136_tsig_secret': TSIG, 'certbot_email': 'ops@example.com',
          'keepalived_vip': '127.0.97.110', 'keepalived_virtual_router_id': 78, 'keepalived_interface': 'lo',
          'keepalived_auth_pass': 'k33p4l1v', 'keepalived_group': 'web_balancers',
          'haproxy_stats_password': 'E' * 20}
    return run_preflight(tmp_path, 'playbooks/app_tier.yml', children, gv, overrides=overrides, drop=drop)


def test_valid_input_passes(tmp_path):
    rc, out, changed = run(tmp_path)
    assert rc == 0, out[-3000:]
    assert changed and not any(changed), out[-2000:]
    assert ADMIN not in out and TSIG not in out


@pytest.mark.parametrize('case, kwargs, expect', [
    ('missing admin password', {'drop': ['odoo_admin_passwd']}, ['odoo_admin_passwd']),
    ('short admin password', {'overrides': {'odoo_admin_passwd': 'admin'}}, ['odoo_admin_passwd']),
    ('missing domain', {'drop': ['saas_domain']}, ['saas_domain']),
    ('domain that is not one', {'overrides': {'saas_domain': 'Not A Domain'}}, ['saas_domain']),
    ('odoo_source directory missing', {'overrides': {'odoo_source': '/nonexistent/odoo'}},
     ['odoo_source', '/nonexistent/odoo']),
    ('odoo_source URL that does not resolve', {'overrides': {'odoo_source': 'file:///nonexistent/odoo.git'}},
     ['odoo_source', 'does not resolve']),
    ('workers beyond memory', {'overrides': {'odoo_workers': 100000}}, ['odoo_workers', 'does not fit']),
    ('connections beyond PgBouncer', {'overrides': {'odoo_db_maxconn': 5000}}, ['odoo_db_maxconn', 'max_client_conn']),
    ('unknown group', {'overrides': {'odoo_group': 'nope'}}, ['odoo_group']),
])
def test_bad_input_stops_in_preflight(tmp_path, case, kwargs, expect):
    rc, out, changed = run(tmp_path, **kwargs)
    assert rc != 0, f'{case}: the run passed\n{out[-2000:]}'
    assert not any(changed), f'{case}: something changed\n{out[-2000:]}'
    for text in expect:
        assert text in out, f'{case}: {text!r} not in the output\n{out[-3000:]}'
