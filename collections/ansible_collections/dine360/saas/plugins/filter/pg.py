# -*- coding: utf-8 -*-
# Copyright: (c) 2026, dine360.saas engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters used by the dine360.saas roles to size and check PostgreSQL, and to skip package installs with nothing to do."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

try:
    import netaddr
    HAS_NETADDR = True
except ImportError:  # pragma: no cover - netaddr is in requirements.txt
    HAS_NETADDR = False


def pg_memory_settings(memory_mb, max_connections=100, shared_buffers_ratio=0.25):
    """Derive PostgreSQL memory settings from a host's RAM (in MiB).

    shared_buffers 25 % of RAM, effective_cache_size 75 %, maintenance_work_mem 5 %
    capped at 2 GiB, and work_mem so that three sorts per connection fit in what is
    left after shared_buffers (at least 4 MiB, at most 256 MiB).
    """
    try:
        memory_mb = int(memory_mb)
        max_connections = int(max_connections)
        ratio = float(shared_buffers_ratio)
    except (TypeError, ValueError) as e:
        raise AnsibleFilterError('pg_memory_settings needs numbers: %s' % e)
    if memory_mb < 256:
        raise AnsibleFilterError('pg_memory_settings: %d MiB of RAM is too little for PostgreSQL' % memory_mb)
    if max_connections < 1 or not 0 < ratio < 1:
        raise AnsibleFilterError('pg_memory_settings: max_connections must be >= 1 and shared_buffers_ratio in (0, 1)')
    shared_buffers = max(128, int(memory_mb * ratio))
    effective_cache = max(256, int(memory_mb * 0.75))
    maintenance = max(64, min(2048, int(memory_mb * 0.05)))
    work_mem = int((memory_mb - shared_buffers) / (max_connections * 3.0))
    work_mem = max(4, min(256, work_mem))
    return {
        'shared_buffers': '%dMB' % shared_buffers,
        'effective_cache_size': '%dMB' % effective_cache,
        'maintenance_work_mem': '%dMB' % maintenance,
        'work_mem': '%dMB' % work_mem,
    }


def cidr_list(value, variable='cidrs'):
    """Validate a list of CIDRs and return it normalised; name the variable on error."""
    if not HAS_NETADDR:
        raise AnsibleFilterError('the cidr_list filter needs the netaddr Python library on the controller')
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise AnsibleFilterError('%s must be a list of CIDRs such as 10.0.0.0/24, got %r' % (variable, value))
    out = []
    bad = []
    for item in value:
        text = str(item).strip()
        if '/' not in text:
            bad.append(text)
            continue
        try:
            out.append(str(netaddr.IPNetwork(text, expand_partial=False).cidr))
        except (netaddr.AddrFormatError, ValueError, TypeError):
            bad.append(text)
    if bad:
        raise AnsibleFilterError(
            '%s contains entries that are not CIDRs (address/prefix, e.g. 10.0.0.0/24): %s'
            % (variable, ', '.join(repr(b) for b in bad)))
    return out


def changed_keys(desired, current):
    """Keys of ``desired`` whose value differs from ``current`` (compared as text, as
    PostgreSQL settings are), sorted. A key missing from ``current`` counts as changed."""
    if not isinstance(desired, dict) or not isinstance(current or {}, dict):
        raise AnsibleFilterError('changed_keys expects two dictionaries')
    current = current or {}
    return sorted(k for k, v in desired.items() if k not in current or str(current[k]) != str(v))


def packages_missing(wanted, installed=None):
    """The packages of ``wanted`` that ``installed`` lacks.

    ``installed`` is a list of installed package names (``dine360_installed_packages``,
    listed by the playbooks' fact-gathering plays) or ``ansible_facts.packages``. With
    neither, every package counts as missing, and so does a name with a version or
    release pin (``name=1.2``, ``name/bookworm``): the caller falls back to the package
    manager whenever it cannot be sure there is nothing to do.
    """
    if isinstance(wanted, str):
        wanted = [wanted]
    if isinstance(installed, (list, tuple, set)):
        installed = set(installed)
    elif not isinstance(installed, Mapping):
        return list(wanted)
    return [p for p in wanted if any(c in p for c in "=/<>*") or p not in installed]


class FilterModule(object):
    def filters(self):
        return {
            'packages_missing': packages_missing,
            'pg_memory_settings': pg_memory_settings,
            'cidr_list': cidr_list,
            'changed_keys': changed_keys,
        }
