# -*- coding: utf-8 -*-
# Copyright: (c) 2026, dine360.saas engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Make ``ansible_collections.dine360.saas`` importable, and provide a real PostgreSQL.

The ``pg_server`` fixture runs PostgreSQL 15 from Debian's packages (installed by
scripts/setup.sh) in a temporary directory on loopback: the tenant module is tested
against the real server, never a mock.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from ansible.plugins.loader import init_plugin_loader
from ansible.utils.collection_loader import AnsibleCollectionConfig

_COLLECTIONS = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..', '..', '..', '..'))
if AnsibleCollectionConfig.collection_finder is None:  # plain pytest, not ansible-test units
    init_plugin_loader([_COLLECTIONS])

PG_BIN = os.environ.get('D360_PG_BIN', '/usr/lib/postgresql/15/bin')


def _free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope='session')
def free_port():
    """A function that returns a free TCP port on loopback (for servers a test starts)."""
    return _free_port


def _as_server_user(argv):
    """PostgreSQL refuses to run as root: run it as the postgres system user then."""
    if os.geteuid() == 0:
        return ['runuser', '-u', 'postgres', '--'] + argv
    return argv


class PgServer(object):
    def __init__(self, base, port):
        self.base, self.port = base, port
        self.data = os.path.join(base, 'data')
        self.socket_dir = os.path.join(base, 'sock')

    def params(self, **kw):
        p = dict(login_user='postgres', login_password='', login_host='', login_unix_socket=self.socket_dir,
                 login_port=self.port, login_db='postgres', connect_timeout=5)
        p.update(kw)
        return p


@pytest.fixture(scope='session')
def pg_server():
    if not os.path.exists(os.path.join(PG_BIN, 'postgres')):
        pytest.fail('PostgreSQL 15 server binaries not found in %s: run scripts/setup.sh '
                    '(it installs Debian\'s postgresql-15)' % PG_BIN)
    base = tempfile.mkdtemp(prefix='d360-pgunit-')
    server = PgServer(base, _free_port())
    os.makedirs(server.socket_dir)
    if os.geteuid() == 0:
        shutil.chown(base, 'postgres', 'postgres')
        shutil.chown(server.socket_dir, 'postgres', 'postgres')
    subprocess.run(_as_server_user([os.path.join(PG_BIN, 'initdb'), '-D', server.data, '-U', 'postgres',
                                    '-E', 'UTF8', '--locale=C.UTF-8', '--auth-local=trust',
                                    '--auth-host=scram-sha-256']),
                   check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(server.data, 'postgresql.auto.conf'), 'a') as f:
        f.write("listen_addresses = '127.0.0.1'\nport = %d\nunix_socket_directories = '%s'\n"
                "max_connections = 200\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                % (server.port, server.socket_dir))
    log = os.path.join(base, 'server.log')
    subprocess.run(_as_server_user([os.path.join(PG_BIN, 'pg_ctl'), '-D', server.data, '-l', log,
                                    '-w', '-t', '60', 'start']), check=True, stdout=subprocess.DEVNULL)
    try:
        yield server
    finally:
        subprocess.run(_as_server_user([os.path.join(PG_BIN, 'pg_ctl'), '-D', server.data, '-m', 'immediate',
                                        'stop']), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        time.sleep(0.2)
        shutil.rmtree(base, ignore_errors=True)


class S3Server(object):
    """A moto server (the S3-compatible test server named in DESIGN.md) on loopback."""

    def __init__(self, port):
        self.port = port
        self.endpoint_url = 'http://127.0.0.1:%d' % port
        self.access_key_id = 'testing'
        self.secret_access_key = 'testing-secret'

    def client(self):
        import boto3
        return boto3.client('s3', endpoint_url=self.endpoint_url, region_name='us-east-1',
                            aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret_access_key)

    def bucket(self, name):
        """Create a fresh bucket and return its target spec."""
        self.client().create_bucket(Bucket=name)
        return {'type': 's3', 'bucket': name, 'endpoint_url': self.endpoint_url, 'region': 'us-east-1',
                'access_key_id': self.access_key_id, 'secret_access_key': self.secret_access_key}


@pytest.fixture(scope='session')
def s3_server():
    moto = os.path.join(os.path.dirname(os.path.realpath(sys.executable)), 'moto_server')
    if not os.path.exists(moto):
        moto = shutil.which('moto_server')
    if not moto:
        pytest.fail('moto_server not found: install requirements.txt (scripts/setup.sh does)')
    server = S3Server(_free_port())
    log = tempfile.NamedTemporaryFile(prefix='d360-moto-', suffix='.log', delete=False)
    proc = subprocess.Popen([moto, '-H', '127.0.0.1', '-p', str(server.port)], stdout=log, stderr=log)
    try:
        for dummy in range(100):
            try:
                socket.create_connection(('127.0.0.1', server.port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail('moto_server did not start (log: %s)' % log.name)
        yield server
    finally:
        proc.terminate()
        proc.wait(10)
