#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, dine360.saas engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r'''
---
module: tenant_dump
short_description: Dump, record, restore and expire per-tenant PostgreSQL dumps in path and S3 targets
version_added: 0.3.0
description:
  - C(dump) takes a C(pg_dump -Fc) of each tenant database, several tenants in parallel, and streams it
    through a SHA-256 into every target at once, with a JSON manifest next to it (tenant, database OID,
    owner, kind, sha256, size, PostgreSQL version, time, node). A C(pg_dumpall --globals-only) is stored
    once per run. Objects go to C(<cluster>/dumps/<tenant>/<UTC timestamp>-<kind>.dump) and
    C(<cluster>/dumps/_globals/<UTC timestamp>.sql). Every target is checked with a write probe before
    anything is dumped; an unusable target fails the run with its reason.
  - Run C(dump) on a replica to spare the primary. The dumps are recorded in C(dine360.tenant_backups)
    when the node is the primary; from a replica, pass RV(records) to C(action=record) on the primary.
    A recorded C(final) dump is what lets C(dine360.saas.tenants) drop an offboarded tenant.
  - C(restore) downloads a dump (the newest by default), verifies its SHA-256 and size against the
    manifest before touching any database, restores it into C(<name>__restoring) and only then moves it
    into place. Restored onto its own name, the current database is renamed aside to
    C(<name>__pre_<timestamp>) and kept. A failed restore drops the temporary database.
  - C(metrics) writes the node_exporter textfile metrics of a C(dump) result (O(dumps), O(timestamp)); a
    separate action because the dump runs as C(postgres) and the textfile directory is root's.
  - C(expire) deletes dumps older than the tenant's retention, always keeping the newest complete dump of
    each tenant and every C(final) dump.
author:
  - dine360.saas engineers (@dine360)
extends_documentation_fragment:
  - dine360.saas.postgres
attributes:
  check_mode:
    support: full
    description: Targets are checked read-only, nothing is written, dumped, restored or deleted; the result predicts the run.
  diff_mode:
    support: none
    description: Dumps and restores are reported in the result, not as a diff.
options:
  action:
    description:
      - C(dump) the O(tenants); C(record) O(records) in the catalog on the primary; C(restore) O(tenant);
        C(metrics) of a dump; C(expire) old dumps.
    type: str
    choices: [dump, record, restore, metrics, expire]
    default: dump
  targets:
    description:
      - Where dumps are stored (C(backup_targets)); every target receives every dump. A restore reads from
        the first target that holds the dump.
      - Needed by C(dump), C(restore) and C(expire).
    type: list
    elements: dict
    default: []
    suboptions:
      type:
        description: C(path) (a mounted filesystem) or C(s3).
        type: str
        choices: [path, s3]
        default: path
      path:
        description: Directory of a C(path) target.
        type: path
      require_mount:
        description: Refuse a C(path) target that is not a mount point (the share is not mounted).
        type: bool
        default: false
      prefix:
        description: Key prefix inside the directory or bucket.
        type: str
        default: ''
      bucket:
        description: Bucket of an C(s3) target.
        type: str
      endpoint_url:
        description: S3-compatible endpoint; unset for AWS.
        type: str
      region:
        description: S3 region.
        type: str
      access_key_id:
        description: S3 access key ID; unset to use the node's role or environment.
        type: str
      secret_access_key:
        description: S3 secret access key. Never shown in the output.
        type: str
      session_token:
        description: S3 session token. Never shown in the output.
        type: str
  cluster:
    description:
      - The cluster's name, the first part of every key (C(backup_cluster_name)).
      - Needed by C(dump), C(restore) and C(expire).
    type: str
  tenants:
    description:
      - Tenant names (their database names) to dump.
    type: list
    elements: str
    default: []
  kind:
    description:
      - Why the dump is taken. C(final) dumps are taken before offboarding and never expire.
    type: str
    choices: [scheduled, manual, final, pre-restore]
    default: manual
  parallel:
    description:
      - How many tenants are dumped at the same time.
    type: int
    default: 4
  skip_missing:
    description:
      - Skip (and list in RV(skipped)) tenants without a database instead of failing, for final dumps before
        offboarding where some tenants may be gone already.
    type: bool
    default: false
  dumps:
    description:
      - For C(metrics), the RV(dumps) of a C(dump) run.
    type: dict
    default: {}
  timestamp:
    description:
      - For C(metrics), the RV(timestamp) of the C(dump) run.
    type: str
  globals:
    description:
      - Also store C(pg_dumpall --globals-only) (roles with their password hashes, tablespaces) once per run.
    type: bool
    default: true
  node:
    description:
      - The name of this node in the manifests. Default the host name.
    type: str
  metrics_file:
    description:
      - node_exporter textfile to update after a dump (atomically; other tenants' lines are kept). Needed by C(metrics).
    type: path
  pg_bin:
    description:
      - Directory of C(pg_dump), C(pg_dumpall) and C(pg_restore).
    type: path
    default: /usr/lib/postgresql/15/bin
  records:
    description:
      - For C(record), the RV(records) of a C(dump) run on a replica.
    type: list
    elements: dict
    default: []
  tenant:
    description:
      - For C(restore), the tenant whose dump is restored.
    type: str
  restore_as:
    description:
      - For C(restore), a new database name (free, a valid tenant name). Unset restores onto the tenant's own name.
    type: str
  restore_from:
    description:
      - For C(restore), C(latest), a UTC timestamp such as C(20260301T020000Z), or a dump's key or file name.
    type: str
    default: latest
  owner:
    description:
      - For C(restore), the role that owns the restored database (the group's C(app_role)). Default the current
        database's owner, else the owner recorded in the manifest. A different owner than the dump's restores
        with C(--no-owner --role).
    type: str
  work_dir:
    description:
      - For C(restore), where the dump is downloaded (it needs the dump's size free). Default the system's temporary directory.
    type: path
  retention_days:
    description:
      - For C(expire), days to keep each tenant's dumps (from its plan's C(backup_retention_days)).
    type: dict
    default: {}
  default_retention_days:
    description:
      - For C(expire), days to keep dumps of tenants not in O(retention_days) (offboarded ones).
      - Globals dumps are kept for the longest retention.
    type: int
    default: 90
notes:
  - The login role must be a superuser (C(postgres) over the Unix socket).
  - A suspended tenant (C(ALLOW_CONNECTIONS false)) is skipped by dumps on a replica, with a warning (it cannot
    change while suspended). On the primary it is opened to superusers only (C(CONNECTION LIMIT 0)) for the
    dump and closed again; a C(final) dump of a suspended tenant must run on the primary.
  - S3 targets need boto3 on the node (Debian C(python3-boto3)).
  - A restored database has no ACLs from the dump and no C(pgbouncer) schema; run the tenants reconciler for it
    (C(playbooks/tenants.yml --tags restore) does) so its grants and PgBouncer lookup function are set up.
seealso:
  - module: dine360.saas.tenants
'''

EXAMPLES = r'''
- name: Dump two tenants on a replica to every backup target
  dine360.saas.tenant_dump:
    action: dump
    tenants: [pizza-roma, sushi-bar]
    targets: "{{ backup_targets }}"
    cluster: dine360-main
    kind: scheduled
    parallel: 4
    metrics_file: /var/lib/prometheus/node-exporter/dine360_tenant_dumps.prom
    login_unix_socket: /var/run/postgresql
  become: true
  become_user: postgres
  register: dumped

- name: Record them on the primary
  dine360.saas.tenant_dump:
    action: record
    records: "{{ dumped.records }}"
    login_unix_socket: /var/run/postgresql
  become: true
  become_user: postgres
  when: not dumped.recorded

- name: Restore yesterday's dump of a tenant under a new name
  dine360.saas.tenant_dump:
    action: restore
    tenant: pizza-roma
    restore_as: pizza-roma-copy
    restore_from: 20260301T020000Z
    targets: "{{ backup_targets }}"
    cluster: dine360-main
    login_unix_socket: /var/run/postgresql
  become: true
  become_user: postgres

- name: Expire old dumps
  dine360.saas.tenant_dump:
    action: expire
    targets: "{{ backup_targets }}"
    cluster: dine360-main
    retention_days:
      pizza-roma: 14
      sushi-bar: 90
    default_retention_days: 90
'''

RETURN = r'''
dumps:
  description: Per dumped tenant, its key, locations, sha256, size, database OID and seconds taken (C(dump)).
  returned: action is dump
  type: dict
  sample: {"pizza-roma": {"key": "dine360-main/dumps/pizza-roma/20260301T020000Z-scheduled.dump",
           "locations": ["s3://backups/dine360-main/dumps/pizza-roma/20260301T020000Z-scheduled.dump"],
           "sha256": "9f86d0...", "size": 1048576, "datoid": 16423, "seconds": 2.1}}
globals:
  description: Key, sha256 and size of the globals dump (C(dump) with O(globals)).
  returned: action is dump
  type: dict
records:
  description: Catalog rows for C(dine360.tenant_backups) (one per dump and target); for C(record), the rows added.
  returned: action is dump or record
  type: list
  elements: dict
skipped:
  description: Tenants not dumped (no database with O(skip_missing), or suspended on a replica).
  returned: action is dump
  type: list
  elements: str
recorded:
  description: Whether the dumps were recorded in the catalog by this run (only on a primary).
  returned: action is dump
  type: bool
in_recovery:
  description: Whether the dump was taken on a replica.
  returned: action is dump
  type: bool
node:
  description: The node named in the manifests.
  returned: action is dump
  type: str
timestamp:
  description: The UTC timestamp of the run, part of every key.
  returned: action is dump or restore
  type: str
database:
  description: The database restored (C(restore)).
  returned: action is restore
  type: str
aside:
  description: The name the previous database was renamed to, or null (C(restore)).
  returned: action is restore
  type: str
source:
  description: The dump that was restored, and its manifest facts (C(restore)).
  returned: action is restore
  type: str
dump:
  description: Manifest facts of the restored dump (timestamp, kind, sha256, size, node, datoid).
  returned: action is restore
  type: dict
statements:
  description: Statements run by a restore.
  returned: action is restore
  type: list
  elements: str
deleted:
  description: Locations of the dumps deleted (C(expire)).
  returned: action is expire
  type: list
  elements: str
kept:
  description: Per tenant, how many complete dumps remain (C(expire)).
  returned: action is expire
  type: dict
errors:
  description: Each cause, when the module fails.
  returned: failure
  type: list
  elements: str
'''

import traceback

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

from ansible_collections.dine360.saas.plugins.module_utils.postgres import (
    connect,
    ensure_required_libs,
    postgres_argument_spec,
)
from ansible_collections.dine360.saas.plugins.module_utils.backup_store import BackupError
from ansible_collections.dine360.saas.plugins.module_utils import tenant_dumps as td


def target_spec():
    return dict(
        type=dict(type='str', choices=['path', 's3'], default='path'),
        path=dict(type='path'),
        require_mount=dict(type='bool', default=False),
        prefix=dict(type='str', default=''),
        bucket=dict(type='str'),
        endpoint_url=dict(type='str'),
        region=dict(type='str'),
        access_key_id=dict(type='str', no_log=False),
        secret_access_key=dict(type='str', no_log=True),
        session_token=dict(type='str', no_log=True),
    )


def main():
    argument_spec = postgres_argument_spec()
    argument_spec.update(
        action=dict(type='str', choices=['dump', 'record', 'restore', 'metrics', 'expire'], default='dump'),
        skip_missing=dict(type='bool', default=False),
        dumps=dict(type='dict', default={}),
        timestamp=dict(type='str'),
        targets=dict(type='list', elements='dict', default=[], options=target_spec()),
        cluster=dict(type='str'),
        tenants=dict(type='list', elements='str', default=[]),
        kind=dict(type='str', choices=list(td.KINDS), default='manual'),
        parallel=dict(type='int', default=4),
        globals=dict(type='bool', default=True),
        node=dict(type='str'),
        metrics_file=dict(type='path'),
        pg_bin=dict(type='path', default=td.PG_BIN),
        records=dict(type='list', elements='dict', default=[]),
        tenant=dict(type='str'),
        restore_as=dict(type='str'),
        restore_from=dict(type='str', default='latest'),
        owner=dict(type='str'),
        work_dir=dict(type='path'),
        retention_days=dict(type='dict', default={}),
        default_retention_days=dict(type='int', default=90),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_if=[
            ('action', 'dump', ('cluster',)),
            ('action', 'restore', ('cluster', 'tenant')),
            ('action', 'expire', ('cluster',)),
            ('action', 'metrics', ('metrics_file', 'timestamp')),
        ],
    )
    p = module.params
    if p['action'] not in ('expire', 'metrics'):
        ensure_required_libs(module)
    targets = [dict((k, v) for k, v in t.items() if v is not None) for t in p['targets']]

    def conn_for(db):
        return connect(p, db)

    try:
        if p['action'] == 'dump':
            if not p['tenants'] and not p['globals']:
                module.exit_json(changed=False, dumps={}, globals=None, records=[], recorded=False)
            if p['parallel'] < 1:
                module.fail_json(msg='parallel must be at least 1', errors=['parallel must be at least 1'])
            result = td.dump(p, conn_for, p['tenants'], targets, p['cluster'], kind=p['kind'], parallel=p['parallel'],
                             pg_bin=p['pg_bin'], dump_globals=p['globals'], node=p['node'],
                             check_mode=module.check_mode, metrics_file=p['metrics_file'],
                             skip_missing=p['skip_missing'])
        elif p['action'] == 'metrics':
            if p['dumps'] and not module.check_mode:
                td.write_metrics(p['metrics_file'], p['dumps'], td.parse_timestamp(p['timestamp']))
            result = dict(changed=bool(p['dumps']))
        elif p['action'] == 'record':
            conn = conn_for(None)
            try:
                added = td.record(conn.cursor(), p['records'], check_mode=module.check_mode)
            finally:
                conn.close()
            result = dict(changed=bool(added), records=added)
        elif p['action'] == 'restore':
            result = td.restore(p, conn_for, targets, p['cluster'], p['tenant'], restore_as=p['restore_as'],
                                restore_from=p['restore_from'], owner=p['owner'], pg_bin=p['pg_bin'],
                                work_dir=p['work_dir'], check_mode=module.check_mode)
        else:
            result = td.expire(targets, p['cluster'], p['retention_days'], p['default_retention_days'],
                               check_mode=module.check_mode)
    except BackupError as e:
        errors = getattr(e, 'errors', None) or [to_native(e)]
        partial = getattr(e, 'details', {}).get('result') or {}
        for warning in partial.pop('warnings', []):
            module.warn(warning)
        partial.pop('changed', None)
        module.fail_json(msg='%s failed:\n- %s' % (p['action'], '\n- '.join(errors)), errors=errors,
                         changed=bool(partial.get('dumps')), **partial)
    except Exception as e:  # pylint: disable=broad-except
        module.fail_json(msg='%s failed: %s' % (p['action'], to_native(e).strip()), errors=[to_native(e).strip()],
                         exception=traceback.format_exc())

    for warning in result.pop('warnings', []):
        module.warn(warning)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
