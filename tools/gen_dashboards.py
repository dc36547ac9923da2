#!/usr/bin/env python3
"""Generate the Grafana dashboards the grafana role provisions, from one compact spec.

    python tools/gen_dashboards.py      # writes roles/grafana/files/dashboards/*.json

Every panel's query must return data on a running tier: tests/ha/test_monitoring.py runs
each one against the scenario's Prometheus and fails on an empty result. Panels for
tiers that are not deployed yet (Odoo, backups) are added with those tiers.
"""
import json
import os

OUT = os.path.join(os.path.dirname(__file__), '..', 'collections', 'ansible_collections', 'dine360', 'saas',
                   'roles', 'grafana', 'files', 'dashboards')
DS = {'type': 'prometheus', 'uid': 'dine360-prometheus'}

DASHBOARDS = {
    'dine360-overview': ('Platform overview: tier health, failovers, connections', [
        ('Targets up by job', 'count by (job) (up == 1)', 'stat'),
        ('Targets down', 'count(up == 0) or vector(0)', 'stat'),
        ('Patroni primaries per cluster (must be 1)', 'sum by (scope) (patroni_primary)', 'stat'),
        ('Timeline changes (failovers and switchovers), 24 h', 'max by (scope) (changes(patroni_postgres_timeline[1d]))', 'stat'),
        ('PostgreSQL connections per node', 'sum by (instance) (pg_stat_activity_count)', 'timeseries'),
        ('PgBouncer clients per node', 'sum by (instance) (pgbouncer_pools_client_active_connections'
         ' + pgbouncer_pools_client_waiting_connections)', 'timeseries'),
        ('etcd has leader', 'min(etcd_server_has_leader)', 'stat'),
        ('Firing alerts', 'count(ALERTS{alertstate="firing"}) or vector(0)', 'stat'),
    ]),
    'dine360-postgresql': ('PostgreSQL and Patroni', [
        ('Role per member (1 = primary)', 'patroni_primary', 'timeseries'),
        ('PostgreSQL running per member', 'patroni_postgres_running', 'timeseries'),
        ('Replication lag (bytes behind the primary)',
         'max by (scope) (patroni_xlog_location) - on(scope) group_right()'
         ' (patroni_xlog_replayed_location and on(instance) (patroni_replica == 1))', 'timeseries'),
        ('Connections used / max_connections', 'sum by (instance) (pg_stat_activity_count)'
         ' / on(instance) max by (instance) (pg_settings_max_connections)', 'timeseries'),
        ('Commits per second', 'sum by (instance) (rate(pg_stat_database_xact_commit[$__rate_interval]))', 'timeseries'),
        ('Timeline', 'patroni_postgres_timeline', 'stat'),
        ('Pending restart', 'patroni_pending_restart', 'stat'),
    ]),
    'dine360-pgbouncer': ('PgBouncer pools', [
        ('PgBouncer up', 'pgbouncer_up', 'stat'),
        ('Active clients by database', 'sum by (database) (pgbouncer_pools_client_active_connections)', 'timeseries'),
        ('Waiting clients by database', 'sum by (database) (pgbouncer_pools_client_waiting_connections)', 'timeseries'),
        ('Server connections (active + idle) by node', 'sum by (instance) (pgbouncer_pools_server_active_connections'
         ' + pgbouncer_pools_server_idle_connections)', 'timeseries'),
        ('Longest client wait (s)', 'max by (instance) (pgbouncer_pools_client_maxwait_seconds)', 'timeseries'),
        ('Queries per second by database', 'sum by (database) (rate(pgbouncer_stats_queries_pooled_total[$__rate_interval]))',
         'timeseries'),
    ]),
    'dine360-haproxy': ('HAProxy (DB write and read ports)', [
        ('Backend servers up', 'haproxy_backend_active_servers', 'timeseries'),
        ('Server status (1 = UP)', 'haproxy_server_status', 'timeseries'),
        ('Current sessions per frontend', 'haproxy_frontend_current_sessions', 'timeseries'),
        ('Sessions per second', 'sum by (proxy) (rate(haproxy_frontend_sessions_total[$__rate_interval]))', 'timeseries'),
    ]),
    'dine360-tenants': ('Tenants: sizes, connections, quotas', [
        ('Database size by tenant', 'max by (datname) (pg_database_size_bytes and on(datname)'
         ' dine360_tenant_storage_quota_bytes)', 'timeseries'),
        ('Storage used / plan quota', 'max by (datname) (pg_database_size_bytes)'
         ' / on(datname) max by (datname) (dine360_tenant_storage_quota_bytes)', 'timeseries'),
        ('Connections by tenant (all nodes)', 'sum by (datname) (pg_stat_database_numbackends and on(datname)'
         ' dine360_tenant_storage_quota_bytes)', 'timeseries'),
        ('Plan quota by tenant', 'max by (datname, plan) (dine360_tenant_storage_quota_bytes)', 'table'),
    ]),
}


def panel(i, title, expr, kind):
    return {
        'id': i + 1, 'type': kind, 'title': title, 'datasource': DS,
        'gridPos': {'h': 8, 'w': 12, 'x': (i % 2) * 12, 'y': (i // 2) * 8},
        'targets': [{'refId': 'A', 'datasource': DS, 'expr': expr, 'legendFormat': '__auto'}],
    }


def main():
    os.makedirs(OUT, exist_ok=True)
    for uid, (title, panels) in DASHBOARDS.items():
        dash = {
            'uid': uid, 'title': 'dine360 / ' + title, 'tags': ['dine360'], 'timezone': 'utc',
            'schemaVersion': 38, 'version': 1, 'refresh': '30s', 'time': {'from': 'now-6h', 'to': 'now'},
            'panels': [panel(i, *p) for i, p in enumerate(panels)],
        }
        with open(os.path.join(OUT, uid + '.json'), 'w') as f:
            json.dump(dash, f, indent=2, sort_keys=True)
            f.write('\n')
        print('wrote %s (%d panels)' % (uid, len(panels)))


if __name__ == '__main__':
    main()
