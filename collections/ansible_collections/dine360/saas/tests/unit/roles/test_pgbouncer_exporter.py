# -*- coding: utf-8 -*-
# Copyright: (c) 2026, dine360.saas engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The PgBouncer exporter (roles/pgbouncer_exporter/files) against a real PgBouncer.

Debian's PgBouncer runs in a temporary directory in front of the ``pg_server`` PostgreSQL 15
(as the postgres OS user when the tests run as root), with scram-sha-256 and a stats user;
the exporter runs as a subprocess, exactly as systemd starts it, and is scraped over HTTP.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import psycopg2
import pytest

ROLE = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..', 'roles', 'pgbouncer_exporter'))
SCRIPT = os.path.join(ROLE, 'files', 'dine360_pgbouncer_exporter.py')
PGBOUNCER = os.environ.get('D360_PGBOUNCER', '/usr/sbin/pgbouncer')
PROMTOOL = shutil.which('promtool')

STATS_USER, STATS_PASSWORD = 'exp_stats', 'St4ts-"pw"-$not\\logged'
APP_USER, APP_PASSWORD = 'exp_app', 'app-password-0123456789'
MAX_CLIENT_CONN, DEFAULT_POOL_SIZE, MAX_USER_CONNECTIONS = 77, 4, 9


def _free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail('timed out after %s s waiting for %s' % (timeout, what))
        time.sleep(0.2)


def _scrape_until(exporter, condition, timeout, what):
    """Scrape until condition(samples) holds; returns the samples of that scrape."""
    found = []

    def check():
        samples = exporter.metrics()
        if condition(samples):
            found.append(samples)
        return found

    _wait_for(check, timeout, what)
    return found[0]


class PgBouncer(object):
    """A PgBouncer 1.18 in its own directory: `waitdb` is a one-connection session pool."""

    def __init__(self, pg_server):
        self.base = tempfile.mkdtemp(prefix='d360-pgbouncer-')
        self.socket_dir = os.path.join(self.base, 'sock')
        self.port = _free_port()
        self.log = os.path.join(self.base, 'pgbouncer.log')
        self.proc = None
        os.makedirs(self.socket_dir)
        target = 'host=127.0.0.1 port=%d dbname=postgres' % pg_server.port
        with open(os.path.join(self.base, 'pgbouncer.ini'), 'w') as f:
            f.write('[databases]\n'
                    'waitdb = %s pool_size=1 pool_mode=session\n'
                    'postgres = %s\n'
                    '[pgbouncer]\n'
                    'listen_addr = 127.0.0.1\nlisten_port = %d\nunix_socket_dir = %s\n'
                    'auth_type = scram-sha-256\nauth_file = %s\nstats_users = %s\n'
                    'pool_mode = transaction\nmax_client_conn = %d\ndefault_pool_size = %d\n'
                    'max_user_connections = %d\nreserve_pool_size = 0\nstats_period = 1\n'
                    'ignore_startup_parameters = extra_float_digits\n'
                    'logfile = %s\npidfile = %s\n'
                    % (target, target, self.port, self.socket_dir, os.path.join(self.base, 'userlist.txt'),
                       STATS_USER, MAX_CLIENT_CONN, DEFAULT_POOL_SIZE, MAX_USER_CONNECTIONS, self.log,
                       os.path.join(self.base, 'pgbouncer.pid')))
        with open(os.path.join(self.base, 'userlist.txt'), 'w') as f:
            for user, password in ((STATS_USER, STATS_PASSWORD), (APP_USER, APP_PASSWORD)):
                f.write('"%s" "%s"\n' % (user, password.replace('"', '""')))
        if os.geteuid() == 0:  # PgBouncer refuses to run as root
            for path in (self.base, self.socket_dir, os.path.join(self.base, 'pgbouncer.ini'),
                         os.path.join(self.base, 'userlist.txt')):
                shutil.chown(path, 'postgres', 'postgres')

    def start(self):
        kw = dict(user='postgres', group='postgres', extra_groups=[]) if os.geteuid() == 0 else {}
        self.proc = subprocess.Popen([PGBOUNCER, os.path.join(self.base, 'pgbouncer.ini')],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
        _wait_for(lambda: self.proc.poll() is not None or os.path.exists(
            os.path.join(self.socket_dir, '.s.PGSQL.%d' % self.port)), 15, 'PgBouncer to listen')
        if self.proc.poll() is not None:
            pytest.fail('PgBouncer exited with %s: %s' % (self.proc.returncode, self.log_text()))

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def log_text(self):
        try:
            with open(self.log) as f:
                return f.read()[-3000:]
        except OSError:
            return ''

    def client(self, dbname='postgres'):
        conn = psycopg2.connect(host='127.0.0.1', port=self.port, dbname=dbname, user=APP_USER,
                                password=APP_PASSWORD, connect_timeout=5)
        conn.autocommit = True
        return conn

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


class Exporter(object):
    """The exporter script as a subprocess, configured like the role's EnvironmentFile does."""

    def __init__(self, bouncer, password=STATS_PASSWORD):
        self.port = _free_port()
        self.url = 'http://127.0.0.1:%d' % self.port
        self.stderr = tempfile.TemporaryFile()
        env = dict(os.environ, PGBOUNCER_EXPORTER_LISTEN='127.0.0.1:%d' % self.port,
                   PGBOUNCER_HOST=bouncer.socket_dir, PGBOUNCER_PORT=str(bouncer.port),
                   PGBOUNCER_USER=STATS_USER, PGBOUNCER_PASSWORD=password)
        self.proc = subprocess.Popen([sys.executable, SCRIPT], env=env, stdout=subprocess.DEVNULL,
                                     stderr=self.stderr)
        _wait_for(self._ready, 15, 'the exporter to answer')

    def _ready(self):
        if self.proc.poll() is not None:
            pytest.fail('the exporter exited with %s: %s' % (self.proc.returncode, self.log_text()))
        try:
            return self.get('/')[0] == 200
        except OSError:
            return False

    def get(self, path, method='GET'):
        req = urllib.request.Request(self.url + path, method=method)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.headers, resp.read().decode('utf-8')
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read().decode('utf-8')

    def scrape(self):
        status, headers, body = self.get('/metrics')
        assert status == 200, body
        assert headers['Content-Type'] == 'text/plain; version=0.0.4; charset=utf-8'
        return body

    def metrics(self):
        return parse(self.scrape())

    def log_text(self):
        self.stderr.seek(0)
        return self.stderr.read().decode('utf-8', 'replace')

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? ([^ ]+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(?:,|$)')
_UNESCAPE = {'\\\\': '\\', '\\"': '"', '\\n': '\n'}


def parse(text):
    """Parse the text exposition format strictly; {(name, ((label, value), ...)): float}.

    Every sample needs a preceding TYPE and HELP for its family, a family's samples are
    contiguous, no family or series appears twice, and the text ends with a line feed.
    """
    assert text.endswith('\n')
    types, helps, samples, done = {}, {}, {}, set()
    current = None
    for line in text.split('\n')[:-1]:
        if line.startswith('# HELP ') or line.startswith('# TYPE '):
            kind, name, rest = line[2:6], line[7:].split(' ', 1)[0], line[7:].split(' ', 1)[1]
            table = helps if kind == 'HELP' else types
            assert name not in table, 'duplicate %s for %s' % (kind, name)
            if kind == 'TYPE':
                assert rest in ('counter', 'gauge', 'histogram', 'summary', 'untyped'), line
            table[name] = rest
            continue
        assert line and not line.startswith('#'), 'unexpected line %r' % line
        m = _SAMPLE.match(line)
        assert m, 'malformed sample %r' % line
        name, label_text, value = m.groups()
        assert name in types and name in helps, 'sample before TYPE/HELP: %r' % line
        if name != current:
            assert name not in done, 'samples of %s are not contiguous' % name
            if current:
                done.add(current)
            current = name
        labels = []
        if label_text:
            pos = 0
            for lm in _LABEL.finditer(label_text):
                assert lm.start() == pos, 'malformed labels in %r' % line
                labels.append((lm.group(1), re.sub(r'\\[\\"n]', lambda e: _UNESCAPE[e.group(0)], lm.group(2))))
                pos = lm.end()
            assert pos == len(label_text), 'malformed labels in %r' % line
        key = (name, tuple(sorted(labels)))
        assert key not in samples, 'duplicate series %r' % (key,)
        samples[key] = float(value)
    for name, kind in types.items():
        if kind == 'counter':
            assert name.endswith('_total'), name
    return samples


def value(samples, metric, **labels):
    return samples.get((metric, tuple(sorted(labels.items()))))


def series(samples, metric):
    return [dict(labels) for name, labels in samples if name == metric]


@pytest.fixture(scope='module')
def app_role(pg_server):
    conn = psycopg2.connect(host=pg_server.socket_dir, port=pg_server.port, user='postgres', dbname='postgres')
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_USER,))
    cur.execute(('ALTER' if cur.fetchone() else 'CREATE') + ' ROLE %s LOGIN PASSWORD %%s' % APP_USER, (APP_PASSWORD,))
    # Its own grant: the tenant tests' reconciler revokes CONNECT on postgres from PUBLIC.
    cur.execute('GRANT CONNECT ON DATABASE postgres TO %s' % APP_USER)
    yield cur
    cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (APP_USER,))
    cur.execute('REVOKE CONNECT ON DATABASE postgres FROM %s' % APP_USER)
    cur.execute('DROP ROLE IF EXISTS %s' % APP_USER)
    conn.close()


@pytest.fixture(scope='module')
def bouncer(pg_server, app_role):  # pylint: disable=unused-argument
    b = PgBouncer(pg_server)
    b.start()
    yield b
    b.cleanup()


@pytest.fixture(scope='module')
def exporter(bouncer):
    e = Exporter(bouncer)
    yield e
    e.stop()


@pytest.fixture(scope='module')
def module():
    spec = importlib.util.spec_from_file_location('dine360_pgbouncer_exporter', SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_metrics_from_a_real_pgbouncer(bouncer, exporter):
    other = bouncer.client('waitdb')
    other.cursor().execute('SELECT 1')
    other.close()
    conn = bouncer.client('postgres')
    cur = conn.cursor()
    for i in range(5):
        cur.execute('SELECT %s', (i,))
    # stats_period is 1 s: PgBouncer's totals follow within a second or two.
    samples = _scrape_until(
        exporter, lambda s: (value(s, 'pgbouncer_stats_queries_pooled_total', database='postgres') or 0) >= 5,
        10, 'the queries in SHOW STATS')
    conn.close()

    assert value(samples, 'pgbouncer_up') == 1
    assert value(samples, 'pgbouncer_exporter_scrape_duration_seconds') > 0
    # SHOW POOLS: one series per (database, user), the console's own pool included.
    for name in ('client_active', 'client_waiting', 'server_active', 'server_idle', 'server_used',
                 'server_testing', 'server_login'):
        assert {'database': 'postgres', 'user': APP_USER} in series(samples, 'pgbouncer_pools_%s_connections' % name)
    assert {'database': 'pgbouncer', 'user': 'pgbouncer'} in series(samples, 'pgbouncer_pools_client_active_connections')
    assert value(samples, 'pgbouncer_pools_client_active_connections', database='postgres', user=APP_USER) == 1
    assert value(samples, 'pgbouncer_pools_client_maxwait_seconds', database='postgres', user=APP_USER) == 0
    # SHOW STATS: counters per database, microseconds as seconds.
    for name in ('sql_transactions_pooled', 'queries_pooled', 'received_bytes', 'sent_bytes',
                 'queries_duration_seconds', 'sql_transactions_duration_seconds', 'client_wait_seconds'):
        assert {'database': 'postgres'} in series(samples, 'pgbouncer_stats_%s_total' % name), name
        assert {'database': 'waitdb'} in series(samples, 'pgbouncer_stats_%s_total' % name), name
    assert value(samples, 'pgbouncer_stats_received_bytes_total', database='postgres') > 0
    assert value(samples, 'pgbouncer_stats_sent_bytes_total', database='postgres') > 0
    assert 0 < value(samples, 'pgbouncer_stats_queries_duration_seconds_total', database='postgres') < 5
    # SHOW DATABASES, label name.
    assert value(samples, 'pgbouncer_databases_pool_size', name='waitdb') == 1
    assert value(samples, 'pgbouncer_databases_pool_size', name='postgres') == DEFAULT_POOL_SIZE
    for name in ('current_connections', 'max_connections', 'paused', 'disabled'):
        assert value(samples, 'pgbouncer_databases_%s' % name, name='postgres') is not None, name
    assert value(samples, 'pgbouncer_databases_paused', name='postgres') == 0
    assert value(samples, 'pgbouncer_databases_disabled', name='postgres') == 0
    # SHOW CONFIG.
    assert value(samples, 'pgbouncer_config_max_client_connections') == MAX_CLIENT_CONN
    assert value(samples, 'pgbouncer_config_max_user_connections') == MAX_USER_CONNECTIONS
    assert value(samples, 'pgbouncer_config_default_pool_size') == DEFAULT_POOL_SIZE


def test_text_format_is_valid(exporter):
    text = exporter.scrape()
    parse(text)
    assert text.count('# TYPE pgbouncer_pools_client_waiting_connections gauge\n') == 1
    assert '# TYPE pgbouncer_stats_queries_pooled_total counter\n' in text
    if PROMTOOL:
        p = subprocess.run([PROMTOOL, 'check', 'metrics'], input=text, capture_output=True, text=True, check=False)
        # 0: clean, 3: lint findings only; 1 (or anything else) is a parse error.
        assert p.returncode in (0, 3) and 'error while linting' not in p.stdout + p.stderr, p.stdout + p.stderr
        assert p.returncode == 0, 'promtool lint findings: %s' % (p.stdout + p.stderr)


def test_waiting_client_is_counted(pg_server, bouncer, exporter):
    errors = []

    def run(sql):
        try:
            conn = bouncer.client('waitdb')
            try:
                conn.cursor().execute(sql)
            finally:
                conn.close()
        except psycopg2.Error as e:
            errors.append(e)

    holder = threading.Thread(target=run, args=('SELECT pg_sleep(60)',))
    holder.start()
    _wait_for(lambda: value(exporter.metrics(), 'pgbouncer_pools_server_active_connections',
                            database='waitdb', user=APP_USER) == 1, 10, 'the sleeping client to hold the pool')
    waiter = threading.Thread(target=run, args=('SELECT 1',))
    waiter.start()
    try:
        samples = _scrape_until(
            exporter, lambda s: value(s, 'pgbouncer_pools_client_waiting_connections',
                                      database='waitdb', user=APP_USER) == 1,
            10, 'a waiting client in SHOW POOLS')
        assert value(samples, 'pgbouncer_pools_client_active_connections', database='waitdb', user=APP_USER) == 1
        assert value(samples, 'pgbouncer_databases_current_connections', name='waitdb') == 1
        time.sleep(1.2)
        samples = exporter.metrics()
        assert value(samples, 'pgbouncer_pools_client_maxwait_seconds', database='waitdb', user=APP_USER) >= 1
    finally:
        pg = psycopg2.connect(host=pg_server.socket_dir, port=pg_server.port, user='postgres', dbname='postgres')
        pg.autocommit = True
        pg.cursor().execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)'")
        pg.close()
        holder.join(30)
        waiter.join(30)
    assert len(errors) == 1 and isinstance(errors[0], psycopg2.errors.QueryCanceled), errors
    _wait_for(lambda: value(exporter.metrics(), 'pgbouncer_pools_client_waiting_connections',
                            database='waitdb', user=APP_USER) == 0, 10, 'the waiting client to be served')


def test_pgbouncer_down_then_back(pg_server, app_role):  # pylint: disable=unused-argument
    b = PgBouncer(pg_server)
    b.start()
    e = Exporter(b)
    try:
        assert value(e.metrics(), 'pgbouncer_up') == 1
        b.stop()
        status, _headers, body = e.get('/metrics')
        assert status == 200
        samples = parse(body)
        assert value(samples, 'pgbouncer_up') == 0
        assert value(samples, 'pgbouncer_exporter_scrape_duration_seconds') is not None
        assert not series(samples, 'pgbouncer_pools_client_active_connections')
        if PROMTOOL:
            p = subprocess.run([PROMTOOL, 'check', 'metrics'], input=body, capture_output=True, text=True, check=False)
            assert p.returncode == 0, p.stdout + p.stderr
        b.start()
        _wait_for(lambda: value(e.metrics(), 'pgbouncer_up') == 1, 10, 'pgbouncer_up 1 after PgBouncer is back')
    finally:
        e.stop()
        b.cleanup()
    log = e.log_text()
    assert 'cannot connect to PgBouncer' in log and 'scrape succeeded again' in log, log
    assert log.count('cannot connect to PgBouncer') == 1, 'a lasting failure is logged once: %s' % log


def test_wrong_password_gives_up_0_and_never_shows_a_password(bouncer):
    wrong = 'wrong-Secret-4711'
    e = Exporter(bouncer, password=wrong)
    try:
        body = e.scrape()
        assert value(parse(body), 'pgbouncer_up') == 0
    finally:
        assert e.stop() == 0
    log = e.log_text()
    assert 'authentication failed' in log, log
    for text in (body, log):
        assert wrong not in text and STATS_PASSWORD not in text


def test_sigterm_stops_cleanly_and_other_paths(bouncer):
    e = Exporter(bouncer)
    assert e.get('/nothing-here')[0] == 404
    status, headers, body = e.get('/metrics', method='HEAD')
    assert status == 200 and body == '' and int(headers['Content-Length']) > 0
    assert e.stop() == 0
    assert e.log_text().rstrip().endswith('stopped'), e.log_text()


def test_other_pgbouncer_versions_never_break_a_scrape(module):
    # The SHOW STATS columns of PgBouncer < 1.8 (the Debian exporter expects these), and
    # unknown extra columns, non-numeric and missing values.
    old_stats = [dict(database='app', total_requests=10, total_received=100, total_sent=200, total_query_time=1500000,
                      avg_req=1, avg_recv=2, avg_sent=3, avg_query=4)]
    new_pools = [dict(database='app', user='u', cl_active=2, cl_waiting=1, cl_active_cancel_req=0, sv_active=1,
                      sv_idle=None, sv_used='3', sv_tested=0, sv_login=0, maxwait=2, maxwait_us=500000,
                      pool_mode='transaction', load_balance_hosts='x')]
    families = (module.stats_families(old_stats) + module.pools_families(new_pools)
                + module.databases_families([dict(name='app', pool_size=20, disabled='n/a')])
                + module.config_families([dict(key='max_client_conn', value='5000', default='100', changeable='yes')]))
    samples = parse(module.render(families))
    assert value(samples, 'pgbouncer_stats_received_bytes_total', database='app') == 100
    assert value(samples, 'pgbouncer_stats_queries_duration_seconds_total', database='app') == 1.5
    assert not series(samples, 'pgbouncer_stats_queries_pooled_total')
    assert value(samples, 'pgbouncer_pools_client_waiting_connections', database='app', user='u') == 1
    assert value(samples, 'pgbouncer_pools_server_used_connections', database='app', user='u') == 3
    assert not series(samples, 'pgbouncer_pools_server_idle_connections')
    assert value(samples, 'pgbouncer_pools_client_maxwait_seconds', database='app', user='u') == 2.5
    assert value(samples, 'pgbouncer_databases_pool_size', name='app') == 20
    assert not series(samples, 'pgbouncer_databases_disabled')
    assert value(samples, 'pgbouncer_config_max_client_connections') == 5000
    assert not series(samples, 'pgbouncer_config_default_pool_size')


def test_label_values_and_help_are_escaped(module):
    family = module.Family('pgbouncer_databases_paused', 'gauge', 'back\\slash\nnewline')
    family.add((('name', 'a"b\\c\nd'),), 1)
    text = module.render([family])
    assert text == ('# HELP pgbouncer_databases_paused back\\\\slash\\nnewline\n'
                    '# TYPE pgbouncer_databases_paused gauge\n'
                    'pgbouncer_databases_paused{name="a\\"b\\\\c\\nd"} 1\n')
    assert value(parse(text), 'pgbouncer_databases_paused', name='a"b\\c\nd') == 1
    assert module.format_value(0.25) == '0.25' and module.format_value(True) == '1'
    assert module.format_value(float('nan')) == 'NaN' and module.format_value(float('-inf')) == '-Inf'


@pytest.mark.parametrize('listen, expected', [
    ('127.0.0.1:9127', ('127.0.0.1', 9127)),
    ('[::1]:9200', ('::1', 9200)),
    (':9127', ('', 9127)),
    ('*:9127', ('', 9127)),
])
def test_listen_address(module, listen, expected):
    assert module.parse_listen(listen) == expected


@pytest.mark.parametrize('listen', ['127.0.0.1', '127.0.0.1:', '127.0.0.1:http', '127.0.0.1:70000'])
def test_bad_listen_address(module, listen):
    with pytest.raises(ValueError):
        module.parse_listen(listen)
