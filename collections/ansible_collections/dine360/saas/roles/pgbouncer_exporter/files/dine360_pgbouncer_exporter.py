# -*- coding: utf-8 -*-
# Copyright: (c) 2026, dine360.saas engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Prometheus exporter for PgBouncer's admin console.

The dine360.saas.pgbouncer_exporter role installs this file as
/usr/local/bin/dine360-pgbouncer-exporter, with ``#!/usr/bin/python3`` as its first line
(the copy kept in the collection has no shebang: ansible-test's sanity rules allow none
that names python3). It needs Python 3 and psycopg2 (Debian's python3-psycopg2).

Each GET of /metrics connects to PgBouncer's admin console (database ``pgbouncer``), runs
SHOW POOLS, SHOW STATS, SHOW DATABASES and SHOW CONFIG, and answers in the Prometheus text
format (0.0.4). Metric names follow prometheus-community/pgbouncer_exporter. Columns are
read by name and a missing column only drops its metric, so PgBouncer versions that add,
remove or rename columns never break a scrape. When PgBouncer cannot be reached (or a SHOW
command fails) the endpoint still answers 200, with ``pgbouncer_up 0``.

Settings, from the environment (systemd reads them from an EnvironmentFile):

  PGBOUNCER_EXPORTER_LISTEN  address:port of the HTTP endpoint ([v6-address]:port for IPv6,
                             *:port for every IPv4 address), default 127.0.0.1:9127
  PGBOUNCER_HOST             PgBouncer's Unix socket directory or host, default /var/run/postgresql
  PGBOUNCER_PORT             PgBouncer's port, default 6432
  PGBOUNCER_USER             console user (one of PgBouncer's stats_users), default pgbouncer_stats
  PGBOUNCER_PASSWORD         its password (never logged)
"""

import http.server
import math
import numbers
import os
import signal
import socket
import sys
import threading
import time

import psycopg2

DEFAULT_LISTEN = '127.0.0.1:9127'
CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'
CONNECT_TIMEOUT = 3
APPLICATION_NAME = 'dine360-pgbouncer-exporter'
# Console times are in microseconds (division keeps 1427 us as 0.001427, not 0.0014269999...).
MICROS_PER_SECOND = 1000000.0

# (metric, column of SHOW POOLS, help); labels database and user.
POOL_GAUGES = (
    ('pgbouncer_pools_client_active_connections', 'cl_active',
     'Client connections linked to a server connection and able to process queries.'),
    ('pgbouncer_pools_client_waiting_connections', 'cl_waiting',
     'Client connections waiting for a server connection.'),
    ('pgbouncer_pools_server_active_connections', 'sv_active',
     'Server connections linked to a client connection.'),
    ('pgbouncer_pools_server_idle_connections', 'sv_idle',
     'Server connections unused and immediately usable for client queries.'),
    ('pgbouncer_pools_server_used_connections', 'sv_used',
     'Server connections idle longer than server_check_delay, to be checked before use.'),
    ('pgbouncer_pools_server_testing_connections', 'sv_tested',
     'Server connections running server_reset_query or server_check_query.'),
    ('pgbouncer_pools_server_login_connections', 'sv_login',
     'Server connections currently logging in.'),
)

# (metric, column of SHOW STATS, divisor, help); label database.
STATS_COUNTERS = (
    ('pgbouncer_stats_sql_transactions_pooled_total', 'total_xact_count', 1,
     'SQL transactions pooled by PgBouncer.'),
    ('pgbouncer_stats_queries_pooled_total', 'total_query_count', 1,
     'SQL queries pooled by PgBouncer.'),
    ('pgbouncer_stats_received_bytes_total', 'total_received', 1,
     'Bytes received from clients.'),
    ('pgbouncer_stats_sent_bytes_total', 'total_sent', 1,
     'Bytes sent to clients.'),
    ('pgbouncer_stats_queries_duration_seconds_total', 'total_query_time', MICROS_PER_SECOND,
     'Seconds spent by PgBouncer actively connected to PostgreSQL, executing queries.'),
    ('pgbouncer_stats_sql_transactions_duration_seconds_total', 'total_xact_time', MICROS_PER_SECOND,
     'Seconds spent by PgBouncer connected to PostgreSQL in a transaction, idle in transaction or executing queries.'),
    ('pgbouncer_stats_client_wait_seconds_total', 'total_wait_time', MICROS_PER_SECOND,
     'Seconds clients spent waiting for a server connection.'),
)

# (metric, column of SHOW DATABASES, help); label name.
DATABASE_GAUGES = (
    ('pgbouncer_databases_pool_size', 'pool_size',
     'Maximum server connections of each pool of the database.'),
    ('pgbouncer_databases_current_connections', 'current_connections',
     'Current server connections of the database.'),
    ('pgbouncer_databases_max_connections', 'max_connections',
     'Maximum server connections of the database (0 = no limit).'),
    ('pgbouncer_databases_paused', 'paused',
     '1 when the database is paused (PAUSE), else 0.'),
    ('pgbouncer_databases_disabled', 'disabled',
     '1 when the database is disabled (DISABLE), else 0.'),
)

# (metric, key of SHOW CONFIG, help).
CONFIG_GAUGES = (
    ('pgbouncer_config_max_client_connections', 'max_client_conn',
     'PgBouncer setting max_client_conn: maximum client connections.'),
    ('pgbouncer_config_max_user_connections', 'max_user_connections',
     'PgBouncer setting max_user_connections: maximum server connections per user (0 = no limit).'),
    ('pgbouncer_config_default_pool_size', 'default_pool_size',
     'PgBouncer setting default_pool_size: server connections per pool.'),
)


class Family(object):
    """One metric family: name, type, help and its samples (labels, value)."""

    def __init__(self, name, kind, text):
        self.name, self.kind, self.text = name, kind, text
        self.samples = []

    def add(self, labels, value):
        self.samples.append((tuple(labels), value))


def escape_help(text):
    """Escape a HELP text: backslash and line feed."""
    return text.replace('\\', '\\\\').replace('\n', '\\n')


def escape_label_value(value):
    """Escape a label value: backslash, double quote and line feed."""
    return value.replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n')


def format_value(value):
    """A sample value as Prometheus writes it (integers without a decimal point)."""
    if isinstance(value, numbers.Integral):
        return str(int(value))
    value = float(value)
    if math.isnan(value):
        return 'NaN'
    if math.isinf(value):
        return '+Inf' if value > 0 else '-Inf'
    return repr(value)


def render(families):
    """The families in the text exposition format; families without samples are left out."""
    lines = []
    for family in families:
        if not family.samples:
            continue
        lines.append('# HELP %s %s' % (family.name, escape_help(family.text)))
        lines.append('# TYPE %s %s' % (family.name, family.kind))
        for labels, value in family.samples:
            if labels:
                label_text = ','.join('%s="%s"' % (k, escape_label_value(v)) for k, v in labels)
                lines.append('%s{%s} %s' % (family.name, label_text, format_value(value)))
            else:
                lines.append('%s %s' % (family.name, format_value(value)))
    return '\n'.join(lines) + '\n'


def to_number(value):
    """A console value as a number, or None when it is missing or not numeric."""
    if value is None:
        return None
    if isinstance(value, numbers.Real):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        pass
    try:
        return float(str(value).strip())
    except ValueError:
        return None


def label(value):
    return '' if value is None else str(value)


def pools_families(rows):
    """SHOW POOLS rows (dicts) as metric families."""
    families = []
    for name, column, text in POOL_GAUGES:
        family = Family(name, 'gauge', text)
        for row in rows:
            value = to_number(row.get(column))
            if value is not None:
                family.add((('database', label(row.get('database'))), ('user', label(row.get('user')))), value)
        families.append(family)
    family = Family('pgbouncer_pools_client_maxwait_seconds', 'gauge',
                    'Seconds the oldest waiting client of the pool has waited.')
    for row in rows:
        seconds = to_number(row.get('maxwait'))
        if seconds is not None:
            micro = to_number(row.get('maxwait_us')) or 0
            family.add((('database', label(row.get('database'))), ('user', label(row.get('user')))),
                       seconds + micro / MICROS_PER_SECOND)
    families.append(family)
    return families


def stats_families(rows):
    """SHOW STATS rows (dicts) as metric families."""
    families = []
    for name, column, divisor, text in STATS_COUNTERS:
        family = Family(name, 'counter', text)
        for row in rows:
            value = to_number(row.get(column))
            if value is not None:
                family.add((('database', label(row.get('database'))),), value / divisor if divisor != 1 else value)
        families.append(family)
    return families


def databases_families(rows):
    """SHOW DATABASES rows (dicts) as metric families."""
    families = []
    for name, column, text in DATABASE_GAUGES:
        family = Family(name, 'gauge', text)
        for row in rows:
            value = to_number(row.get(column))
            if value is not None:
                family.add((('name', label(row.get('name'))),), value)
        families.append(family)
    return families


def config_families(rows):
    """SHOW CONFIG rows (dicts with key and value) as metric families."""
    settings = dict((label(row.get('key')), row.get('value')) for row in rows)
    families = []
    for name, key, text in CONFIG_GAUGES:
        family = Family(name, 'gauge', text)
        value = to_number(settings.get(key))
        if value is not None:
            family.add((), value)
        families.append(family)
    return families


SECTIONS = (
    ('SHOW POOLS', pools_families),
    ('SHOW STATS', stats_families),
    ('SHOW DATABASES', databases_families),
    ('SHOW CONFIG', config_families),
)


def rows_as_dicts(cursor):
    names = [column[0] for column in cursor.description or ()]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def parse_listen(value):
    """'address:port' or '[v6-address]:port' as (address, port); ValueError when invalid.

    An empty address or '*' means every IPv4 address.
    """
    host, sep, port = value.strip().rpartition(':')
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError('PGBOUNCER_EXPORTER_LISTEN must be address:port, not %r' % value)
    if host.startswith('[') and host.endswith(']'):
        host = host[1:-1]
    return ('' if host == '*' else host), int(port)


class Settings(object):
    """The exporter's settings, from the environment."""

    def __init__(self, environ):
        self.listen = parse_listen(environ.get('PGBOUNCER_EXPORTER_LISTEN') or DEFAULT_LISTEN)
        self.host = environ.get('PGBOUNCER_HOST') or '/var/run/postgresql'
        port = environ.get('PGBOUNCER_PORT') or '6432'
        if not port.isdigit():
            raise ValueError('PGBOUNCER_PORT must be a port number, not %r' % port)
        self.port = int(port)
        self.user = environ.get('PGBOUNCER_USER') or 'pgbouncer_stats'
        self.password = environ.get('PGBOUNCER_PASSWORD') or None

    def connect(self):
        kwargs = dict(host=self.host, port=self.port, user=self.user, dbname='pgbouncer',
                      connect_timeout=CONNECT_TIMEOUT, application_name=APPLICATION_NAME)
        if self.password is not None:
            kwargs['password'] = self.password
        conn = psycopg2.connect(**kwargs)
        # The console accepts no BEGIN: every command runs on its own.
        conn.autocommit = True
        return conn


class Exporter(object):
    """Collects the metrics on each scrape; logs a failure once, until it changes or clears."""

    def __init__(self, settings):
        self.settings = settings
        self._lock = threading.Lock()
        self._last_error = None

    def _log_state(self, error):
        with self._lock:
            if error != self._last_error:
                if error is not None:
                    log('scrape failed: %s' % error)
                elif self._last_error is not None:
                    log('scrape succeeded again')
                self._last_error = error

    def collect(self):
        """The metric families of one scrape, and the first error (None when all went well)."""
        families, error = [], None
        try:
            conn = self.settings.connect()
        except psycopg2.Error as e:
            return families, 'cannot connect to PgBouncer: %s' % one_line(e)
        try:
            with conn.cursor() as cur:
                for command, builder in SECTIONS:
                    try:
                        cur.execute(command)
                        families.extend(builder(rows_as_dicts(cur)))
                    except psycopg2.Error as e:
                        error = error or '%s: %s' % (command, one_line(e))
                        if conn.closed:
                            break
        except psycopg2.Error as e:
            error = error or one_line(e)
        finally:
            conn.close()
        return families, error

    def scrape(self):
        """The text of one scrape."""
        start = time.monotonic()
        families, error = self.collect()
        self._log_state(error)
        up = Family('pgbouncer_up', 'gauge', '1 when PgBouncer answered every SHOW command of the scrape, else 0.')
        up.add((), 0 if error else 1)
        duration = Family('pgbouncer_exporter_scrape_duration_seconds', 'gauge',
                          'Seconds the scrape of PgBouncer took.')
        duration.add((), round(time.monotonic() - start, 6))
        return render([up] + families + [duration])


def one_line(error):
    return ' '.join(str(error).split()) or error.__class__.__name__


def log(message):
    sys.stderr.write('%s\n' % message)
    sys.stderr.flush()


INDEX = (b'<html><head><title>PgBouncer exporter</title></head><body><h1>PgBouncer exporter</h1>'
         b'<p><a href="/metrics">Metrics</a></p></body></html>\n')


class Handler(http.server.BaseHTTPRequestHandler):
    """GET or HEAD /metrics (the scrape) and / (a link to it)."""

    server_version = 'dine360-pgbouncer-exporter'

    def do_GET(self):  # pylint: disable=invalid-name
        self._respond(send_body=True)

    def do_HEAD(self):  # pylint: disable=invalid-name
        self._respond(send_body=False)

    def _respond(self, send_body):
        path = self.path.split('?', 1)[0]
        if path == '/metrics':
            status, ctype, body = 200, CONTENT_TYPE, self.server.exporter.scrape().encode('utf-8')
        elif path == '/':
            status, ctype, body = 200, 'text/html; charset=utf-8', INDEX
        else:
            status, ctype, body = 404, 'text/plain; charset=utf-8', b'Not found: see /metrics\n'
        self.send_response(status)
        self.send_header('Content-Type', ctype)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format, *args):  # pylint: disable=redefined-builtin
        """No access log: Prometheus scrapes every few seconds."""


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, exporter):
        if ':' in address[0]:
            self.address_family = socket.AF_INET6
        self.exporter = exporter
        http.server.ThreadingHTTPServer.__init__(self, address, Handler)


def main():
    try:
        settings = Settings(os.environ)
    except ValueError as e:
        log('configuration error: %s' % e)
        return 2
    try:
        server = Server(settings.listen, Exporter(settings))
    except OSError as e:
        log('cannot listen on %s port %d: %s' % (settings.listen[0] or '*', settings.listen[1], e))
        return 1

    stop = threading.Event()

    def on_signal(signum, frame):  # pylint: disable=unused-argument
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    thread = threading.Thread(target=server.serve_forever, kwargs=dict(poll_interval=0.5), daemon=True)
    thread.start()
    log('serving /metrics on %s port %d for PgBouncer at %s port %d (user %s)'
        % (settings.listen[0] or '*', settings.listen[1], settings.host, settings.port, settings.user))
    while not stop.wait(3600):
        pass
    server.shutdown()
    server.server_close()
    log('stopped')
    return 0


if __name__ == '__main__':
    sys.exit(main())
