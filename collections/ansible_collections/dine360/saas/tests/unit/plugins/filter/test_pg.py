# -*- coding: utf-8 -*-
# Copyright: (c) 2026, dine360.saas engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of the dine360.saas pg filters (memory sizing, CIDR validation)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import importlib.util
import os

import pytest

from ansible.errors import AnsibleFilterError

_PATH = os.path.join(os.path.dirname(__file__), '..', '..', '..', '..', 'plugins', 'filter', 'pg.py')
_spec = importlib.util.spec_from_file_location('dine360_pg_filter', _PATH)
pg = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pg)


def test_memory_settings_for_2gib():
    s = pg.pg_memory_settings(2048, 300)
    assert s['shared_buffers'] == '512MB'
    assert s['effective_cache_size'] == '1536MB'
    assert s['maintenance_work_mem'] == '102MB'
    assert s['work_mem'] == '4MB'


def test_memory_settings_scale_and_cap():
    s = pg.pg_memory_settings(65536, 100)
    assert s['shared_buffers'] == '16384MB'
    assert s['maintenance_work_mem'] == '2048MB'   # capped at 2 GiB
    assert s['work_mem'] == '163MB'                # (64 GiB - 16 GiB) / 300


def test_memory_settings_reject_tiny_hosts():
    with pytest.raises(AnsibleFilterError, match='too little'):
        pg.pg_memory_settings(128, 100)


def test_memory_settings_reject_non_numbers():
    with pytest.raises(AnsibleFilterError, match='numbers'):
        pg.pg_memory_settings('lots', 100)


def test_cidr_list_normalises():
    assert pg.cidr_list(['10.1.2.3/24', '::1/128']) == ['10.1.2.0/24', '::1/128']
    assert pg.cidr_list('192.168.0.0/16') == ['192.168.0.0/16']


@pytest.mark.parametrize('bad', ['10.0.0.0/33', '10.0.0.1', 'not-a-net', '300.1.1.1/8'])
def test_cidr_list_names_variable_and_entry(bad):
    with pytest.raises(AnsibleFilterError) as e:
        pg.cidr_list(['10.0.0.0/8', bad], 'patroni_pg_hba_client_cidrs')
    assert 'patroni_pg_hba_client_cidrs' in str(e.value)
    assert repr(bad) in str(e.value)
    assert "'10.0.0.0/8'" not in str(e.value)


def test_cidr_list_rejects_non_lists():
    with pytest.raises(AnsibleFilterError, match='must be a list'):
        pg.cidr_list({'a': 1}, 'x')


def test_changed_keys():
    desired = {'max_connections': 320, 'work_mem': '4MB', 'new': 'on'}
    current = {'max_connections': 300, 'work_mem': '4MB', 'other': 1}
    assert pg.changed_keys(desired, current) == ['max_connections', 'new']
    assert pg.changed_keys({'a': 1}, {'a': '1'}) == []
    assert pg.changed_keys({'a': 1}, None) == ['a']
    with pytest.raises(AnsibleFilterError):
        pg.changed_keys([], {})


def test_packages_missing_against_the_installed_list():
    installed = ['etcd-server', 'etcd-client', 'curl']
    assert pg.packages_missing(['etcd-server', 'etcd-client'], installed) == []
    assert pg.packages_missing(['etcd-server', 'pgbouncer'], installed) == ['pgbouncer']
    assert pg.packages_missing('curl', installed) == []


def test_packages_missing_accepts_package_facts():
    facts = {'curl': [{'version': '7.88'}]}
    assert pg.packages_missing(['curl'], facts) == []
    assert pg.packages_missing(['curl', 'haproxy'], facts) == ['haproxy']


@pytest.mark.parametrize('installed', [None, '', 'curl'])
def test_packages_missing_without_a_list_runs_the_package_manager(installed):
    assert pg.packages_missing(['curl'], installed) == ['curl']


@pytest.mark.parametrize('pinned', ['curl=7.88.1-10', 'curl/bookworm-backports', 'curl>=7'])
def test_packages_missing_never_skips_a_pinned_package(pinned):
    assert pg.packages_missing([pinned], ['curl']) == [pinned]
