"""Bad input stops a run before any change, with a message naming the variable.

Runs the real playbooks/db_cluster.yml against a throwaway inventory of three hosts
that use the local connection (so nothing is installed anywhere): only the preflight
plays run (`--tags preflight`), or one role's preflight (`--tags patroni_preflight`).
"""
import os
import re
import subprocess
import sys
import textwrap

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)

SECRETS = {
    'patroni_superuser_password': 'S' * 20, 'patroni_replication_password': 'R' * 20,
    'patroni_rewind_password': 'W' * 20, 'patroni_restapi_password': 'A' * 20,
    'pgbouncer_auth_password': 'B' * 20, 'pgbouncer_admin_password': 'C' * 20,
    'pgbouncer_stats_password': 'D' * 20, 'haproxy_stats_password': 'E' * 20,
    'keepalived_auth_pass': 'k33p4l1v',
}
BASE = {
    'ansible_connection': 'local', 'ansible_become': False,
    'ansible_python_interpreter': sys.executable,
    'keepalived_vip': '127.0.99.100', 'keepalived_virtual_router_id': 77,
    'keepalived_interface': 'lo',
    'patroni_pg_hba_client_cidrs': ['10.0.0.0/24'],
    'patroni_pg_hba_replication_cidrs': ['10.0.0.0/24'],
    'patroni_memory_mb': 2048,
    # Nothing listens here: the DCS is unreachable.
    'etcd_client_port': 1,
}


def run(tmp_path, overrides=None, drop=(), hosts=3, etcd_hosts=None, tags='preflight'):
    inv = tmp_path / 'inv'
    (inv / 'group_vars').mkdir(parents=True)
    names = ['n%d' % i for i in range(1, hosts + 1)]
    etcd = names[:etcd_hosts] if etcd_hosts else names
    hosts_yml = {'all': {'children': {
        'etcd_cluster': {'hosts': {n: None for n in etcd}},
        'postgres_cluster': {'hosts': {n: None for n in names}},
        'db_balancers': {'hosts': {n: None for n in names}},
        'nodes': {'hosts': {n: {'dine360_node_address': '127.0.99.%d' % (i + 10)} for i, n in enumerate(names)}},
    }}}
    (inv / 'hosts.yml').write_text(yaml.safe_dump(hosts_yml))
    gv = dict(BASE, **SECRETS)
    gv.update(overrides or {})
    for k in drop:
        gv.pop(k, None)
    (inv / 'group_vars' / 'all.yml').write_text(yaml.safe_dump(gv))
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ['PATH'], ANSIBLE_NOCOLOR='1',
               ANSIBLE_STDOUT_CALLBACK='ansible.builtin.default')
    p = subprocess.run([os.path.join(BIN, 'ansible-playbook'), '-i', str(inv), 'playbooks/db_cluster.yml',
                        '--tags', tags], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = p.stdout + p.stderr
    changed = [int(c) for c in re.findall(r'changed=(\d+)', out)]
    return p.returncode, out, changed


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
    rc, out, changed = run(tmp_path, tags='patroni_preflight')
    assert rc != 0, out[-3000:]
    assert 'DCS is unreachable' in out and 'patroni_etcd_group' in out, out[-3000:]
    assert not any(changed), out[-2000:]


def test_no_secret_in_output(tmp_path):
    rc, out, _ = run(tmp_path, overrides={'patroni_pg_hba_client_cidrs': ['bad']})
    assert rc != 0
    for value in SECRETS.values():
        assert value not in out, textwrap.shorten(out, 500)
