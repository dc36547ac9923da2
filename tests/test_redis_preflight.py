"""playbooks/redis.yml: bad input stops the run in preflight, with a message naming the variable.

Runs the real playbook with `--tags preflight` against a throwaway inventory whose hosts use
the local connection (nothing is installed anywhere).
"""
import pytest

from preflight_run import run_preflight

PASSWORD = 'Rr7' * 8


def run(tmp_path, overrides=None, drop=(), hosts=3):
    names = ['r%d' % i for i in range(1, hosts + 1)]
    children = {'redis_cluster': {'hosts': {
        n: {'dine360_node_address': '127.0.98.%d' % (i + 10)} for i, n in enumerate(names)}}}
    return run_preflight(tmp_path, 'playbooks/redis.yml', children, {'redis_password': PASSWORD},
                         overrides=overrides, drop=drop)


def test_valid_input_passes(tmp_path):
    rc, out, changed = run(tmp_path)
    assert rc == 0, out[-3000:]
    assert changed and not any(changed), out[-2000:]
    assert PASSWORD not in out


@pytest.mark.parametrize('case, kwargs, expect', [
    ('missing password', {'drop': ['redis_password']}, ['redis_password']),
    ('short password', {'overrides': {'redis_password': 'short'}}, ['redis_password']),
    ('two nodes', {'hosts': 2}, ['redis_group', 'odd number']),
    ('four nodes', {'hosts': 4}, ['redis_group', 'odd number']),
    ('maxmemory above the host memory', {'overrides': {'redis_maxmemory_mb': 10 ** 7}}, ['redis_maxmemory_mb']),
    ('quorum not a majority', {'overrides': {'redis_sentinel_quorum': 1}}, ['redis_sentinel_quorum']),
    ('unknown eviction policy', {'overrides': {'redis_maxmemory_policy': 'lru'}}, ['redis_maxmemory_policy']),
])
def test_bad_input_stops_in_preflight(tmp_path, case, kwargs, expect):
    rc, out, _ = run(tmp_path, **kwargs)
    assert rc != 0, f'{case}: the run passed\n{out[-2000:]}'
    for text in expect:
        assert text in out, f'{case}: {text!r} not in the output\n{out[-3000:]}'
    assert PASSWORD not in out
