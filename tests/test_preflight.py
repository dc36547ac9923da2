"""Bad input stops a run before any change, with a message naming the variable.

Runs the real playbooks/db_cluster.yml against a throwaway inventory of three hosts
that use the local connection (so nothing is installed anywhere): only the preflight
plays run (`--tags preflight`), or one role's preflight (`--tags patroni_preflight`).
"""
import textwrap

import pytest

from preflight_run import run_preflight

SECRETS = {
    'patroni_superuser_password': 'S' * 20, 'patroni_replication_password': 'R' * 20,
    'patroni_rewind_password': 'W' * 20, 'patroni_restapi_password': 'A' * 20,
    'pgbouncer_auth_password': 'B' * 20, 'pgbouncer_admin_password': 'C' * 20,
    'pgbouncer_stats_password': 'D' * 20, 'haproxy_stats_password': 'E' * 20,
    'keepalived_auth_pass': 'k33p4l1v', 'saas_password_seed': 'Z' * 40,
}
BASE = {
    'keepalived_vip': '127.0.99.100', 'keepalived_virtual_router_id': 77,
    'keepalived_interface': 'lo',
    'patroni_pg_hba_client_cidrs': ['10.0.0.0/24'],
    'patroni_pg_hba_replication_cidrs': ['10.0.0.0/24'],
    'patroni_memory_mb': 2048,
    # Nothing listens here: the DCS is unreachable.
    'etcd_client_port': 1,
}


def run(tmp_path, overrides=None, drop=(), hosts=3, etcd_hosts=None, tags='preflight',
        playbook='playbooks/db_cluster.yml', extra=()):
    names = ['n%d' % i for i in range(1, hosts + 1)]
    etcd = names[:etcd_hosts] if etcd_hosts else names
    children = {
        'etcd_cluster': {'hosts': {n: None for n in etcd}},
        'postgres_cluster': {'hosts': {n: None for n in names}},
        'db_balancers': {'hosts': {n: None for n in names}},
        'nodes': {'hosts': {n: {'dine360_node_address': '127.0.99.%d' % (i + 10)} for i, n in enumerate(names)}},
    }
    return run_preflight(tmp_path, playbook, children, dict(BASE, **SECRETS), overrides=overrides, drop=drop,
                         tags=tags, extra=extra)


def test_valid_input_passes_preflight(tmp_path):
    rc, out, changed = run(tmp_path)
    assert rc == 0, out[-3000:]
    assert changed and not any(changed), out[-2000:]


@pytest.mark.parametrize('case, kwargs, expect', [
    ('even etcd group', {'etcd_hosts': 2}, ['odd number', 'etcd_group']),
    ('missing secret', {'drop': ['patroni_superuser_password']}, ['patroni_superuser_password']),
    ('short pgbouncer secret', {'overrides': {'pgbouncer_admin_password': 'x'}}, ['pgbouncer_admin_password']),
    ('bad CIDR', {'overrides': {'patroni_pg_hba_client_cidrs': ['10.0.0.0/33']}},
     ['patroni_pg_hba_client_cidrs', "'10.0.0.0/33'"]),
    ('pools beyond max_connections', {'overrides': {'patroni_max_connections': 100}},
     ['max_connections', 'pgbouncer_default_pool_size', 'patroni_max_connections']),
    ('missing VIP password', {'drop': ['keepalived_auth_pass']}, ['keepalived_auth_pass']),
    ('missing stats password', {'drop': ['haproxy_stats_password']}, ['haproxy_stats_password']),
    ('inconsistent timings', {'overrides': {'patroni_ttl': 10, 'patroni_loop_wait': 5, 'patroni_retry_timeout': 5}},
     ['patroni_ttl', 'patroni_retry_timeout']),
])
def test_bad_input_stops_before_any_change(tmp_path, case, kwargs, expect):
    rc, out, changed = run(tmp_path, **kwargs)
    assert rc != 0, '%s: the run should have failed\n%s' % (case, out[-3000:])
    for text in expect:
        assert text in out, '%s: %r not in output\n%s' % (case, text, out[-3000:])
    assert not any(changed), '%s: something changed\n%s' % (case, out[-2000:])


def test_unreachable_dcs_stops_patroni(tmp_path):
    # Nothing listens on the throwaway addresses: one second per endpoint is enough to find out.
    rc, out, changed = run(tmp_path, tags='patroni_preflight', overrides={'patroni_dcs_probe_timeout': 1})
    assert rc != 0, out[-3000:]
    assert 'DCS is unreachable' in out and 'patroni_etcd_group' in out, out[-3000:]
    assert not any(changed), out[-2000:]


def test_no_secret_in_output(tmp_path):
    rc, out, _ = run(tmp_path, overrides={'patroni_pg_hba_client_cidrs': ['bad']})
    assert rc != 0
    for value in SECRETS.values():
        assert value not in out, textwrap.shorten(out, 500)


# --------------------------------------------------------------------------- tenant list

GOOD_TENANTS = [{'name': 'pizza-roma', 'plan': 'starter', 'group': 'core', 'state': 'present'}]


def test_valid_tenant_list_passes_preflight(tmp_path):
    rc, out, changed = run(tmp_path, overrides={'saas_tenants': GOOD_TENANTS}, playbook='playbooks/tenants.yml')
    assert rc == 0, out[-3000:]
    assert '1 tenants, 3 plans, 1 groups: valid.' in out, out[-3000:]
    assert changed and not any(changed), out[-2000:]


@pytest.mark.parametrize('case, tenants, expect', [
    ('bad names', GOOD_TENANTS + [
        {'name': 'Pizza', 'plan': 'starter', 'group': 'core'},
        {'name': '1pizza', 'plan': 'starter', 'group': 'core'},
        {'name': 'p' * 42, 'plan': 'starter', 'group': 'core'},
        {'name': 'a"; drop database x; --', 'plan': 'starter', 'group': 'core'},
        {'name': 'postgres', 'plan': 'starter', 'group': 'core'},
        {'name': 'core-template', 'plan': 'starter', 'group': 'core'},
        {'name': 'pizza-roma', 'plan': 'starter', 'group': 'core'},
        {'name': 'new-one', 'plan': 'gold', 'group': 'core'},
        {'name': 'other-one', 'plan': 'starter', 'group': 'nowhere'},
        {'name': 'pizza-', 'plan': 'starter', 'group': 'core'},
        {'name': 'xn--pizza', 'plan': 'starter', 'group': 'core'},
        {'name': 'www', 'plan': 'starter', 'group': 'core'},
        {'name': 'pgbouncer', 'plan': 'starter', 'group': 'core'},
     ], ["saas_tenants[1] 'Pizza'", "saas_tenants[2] '1pizza'", "saas_tenants[3] '%s'" % ('p' * 42),
         'drop database x', "saas_tenants[5] 'postgres'", "'core-template': a reserved name",
         'saas_tenants[7] \'pizza-roma\': duplicate of saas_tenants[0]', "unknown plan 'gold'",
         "unknown group 'nowhere'", "saas_tenants[10] 'pizza-': a DNS label does not end with a hyphen",
         "saas_tenants[11] 'xn--pizza': hyphens in the third and fourth places",
         "saas_tenants[12] 'www': a reserved name: one of the platform's own host names",
         "saas_tenants[13] 'pgbouncer': a reserved name: PgBouncer's admin console database"]),
])
def test_bad_tenant_list_stops_before_any_change(tmp_path, case, tenants, expect):
    rc, out, changed = run(tmp_path, overrides={'saas_tenants': tenants}, playbook='playbooks/tenants.yml')
    assert rc != 0, '%s: the run should have failed\n%s' % (case, out[-3000:])
    for text in expect:
        assert text in out, '%s: %r not in output\n%s' % (case, text, out[-4000:])
    assert not any(changed), out[-2000:]


def test_unknown_tenant_and_missing_seed(tmp_path):
    rc, out, _ = run(tmp_path, overrides={'saas_tenants': GOOD_TENANTS}, playbook='playbooks/tenants.yml',
                     extra=['-e', 'tenant=ghost-town'])
    assert rc != 0 and 'Not in saas_tenants: ghost-town' in out, out[-3000:]
    rc, out, _ = run(tmp_path, overrides={'saas_tenants': GOOD_TENANTS}, drop=['saas_password_seed'],
                     playbook='playbooks/tenants.yml')
    assert rc != 0 and 'saas_password_seed is missing' in out, out[-3000:]
