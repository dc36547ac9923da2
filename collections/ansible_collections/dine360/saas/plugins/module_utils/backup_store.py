# -*- coding: utf-8 -*-
# Copyright: (c) 2026, dine360.saas engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backup targets and the archive object format, shared by dine360.saas's backup code.

Used by the tenant dump module (shipped to the node by Ansible) and by the
``dine360-backup`` command (the backup role installs this file beside it), so WAL
segments, base backups and tenant dumps are written by one implementation.

A target is a mounted path (CephFS, NFS, a local disk) or an S3 bucket reached with
boto3 (``endpoint_url`` for S3-compatible servers). Both offer the same operations:

* ``put(key, fileobj)`` stores an object only if the key is free. On a path the data is
  written to a temporary name in the same directory, fsynced, hard-linked to its final
  name (which fails when the name exists, so nothing is ever overwritten), the
  temporary name removed and the directory fsynced. On S3 a HEAD precedes the PUT; a
  successful PUT is durable.
* ``get``, ``read_head`` (the first bytes, for a header), ``size``, ``list``, ``delete``.

WAL segments are stored as one self-describing object: ``MAGIC``, one JSON line (codec,
size and SHA-256 of the uncompressed segment) and the compressed payload. The checksum
travels with the segment and is checked on every restore.

Heavy optional imports (boto3, zstandard, lz4) happen when first needed, so the module
imports on any host.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import errno
import hashlib
import io
import json
import os
import tempfile

MAGIC = b'DINE360-WAL 1\n'
HEADER_MAX = 4096
CHUNK = 1024 * 1024
CODECS = ('zstd', 'lz4', 'none')


class BackupError(Exception):
    """A failure reported to the operator. ``exit_code`` stays below 125 (PostgreSQL's rule)."""
    exit_code = 1


class TargetError(BackupError):
    """The target cannot be reached or refuses the operation."""
    exit_code = 3


class ConflictError(BackupError):
    """A different object already exists under the name."""
    exit_code = 4


class ChecksumError(BackupError):
    """Stored data does not match its checksum."""
    exit_code = 5


class NotFoundError(BackupError):
    """The object does not exist."""
    exit_code = 6


class ObjectExists(Exception):
    """Raised by ``put`` when the key is taken (the caller decides whether that is fine)."""


def sha256_file(path):
    """(hex SHA-256, size) of a file."""
    h = hashlib.sha256()
    size = 0
    with open(path, 'rb') as f:
        while True:
            block = f.read(CHUNK)
            if not block:
                break
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


class HashingReader(object):
    """A file-like wrapper that hashes and counts what is read through it."""

    def __init__(self, raw):
        self.raw = raw
        self.sha = hashlib.sha256()
        self.size = 0

    def read(self, n=-1):
        block = self.raw.read(n)
        self.sha.update(block)
        self.size += len(block)
        return block

    def hexdigest(self):
        return self.sha.hexdigest()


def _join(*parts):
    return '/'.join(p.strip('/') for p in parts if p and p.strip('/'))


class PathTarget(object):
    """A directory on a mounted filesystem."""

    kind = 'path'

    def __init__(self, path, prefix='', require_mount=False):
        self.root = os.path.abspath(path)
        self.prefix = prefix.strip('/')
        self.require_mount = require_mount

    def describe(self):
        return 'path %s' % os.path.join(self.root, self.prefix)

    def _path(self, key):
        return os.path.join(self.root, self.prefix, key)

    def check(self, write=True, under=''):
        """Fail with a clear message unless the target is usable (and writable under ``under``)."""
        if not os.path.isdir(self.root):
            raise TargetError('backup path %s does not exist (is the share mounted?)' % self.root)
        if self.require_mount and not os.path.ismount(self.root):
            raise TargetError('backup path %s is not a mount point: mount the backup share there, '
                              'or set require_mount: false for a local directory' % self.root)
        if write:
            import uuid  # here: wal-push and wal-get never need it
            probe = _join(under, 'probe', uuid.uuid4().hex)
            try:
                self.put(probe, io.BytesIO(b'dine360 write probe\n'))
                self.delete(probe)
            except (OSError, BackupError) as e:
                raise TargetError('backup path %s refuses writes: %s' % (self.root, _oserror(e)))

    def put(self, key, fileobj):
        """Store ``fileobj`` under ``key`` unless the key exists (ObjectExists). Durable on return."""
        final = self._path(key)
        directory = os.path.dirname(final)
        try:
            os.makedirs(directory, exist_ok=True)
            if os.path.lexists(final):
                raise ObjectExists(key)
            fd, tmp = tempfile.mkstemp(prefix='.tmp.', dir=directory)
        except OSError as e:
            raise TargetError('cannot write to %s: %s' % (directory, _oserror(e)))
        try:
            try:
                with os.fdopen(fd, 'wb') as out:
                    while True:
                        block = fileobj.read(CHUNK)
                        if not block:
                            break
                        out.write(block)
                    out.flush()
                    os.fsync(out.fileno())
                os.link(tmp, final)
            except OSError as e:
                if e.errno == errno.EEXIST:
                    raise ObjectExists(key)
                raise TargetError('cannot write %s: %s' % (final, _oserror(e)))
        finally:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        _fsync_dir(directory)

    def get(self, key):
        try:
            return open(self._path(key), 'rb')
        except OSError as e:
            if e.errno == errno.ENOENT:
                raise NotFoundError('%s not found in %s' % (key, self.describe()))
            raise TargetError('cannot read %s: %s' % (self._path(key), _oserror(e)))

    def read_head(self, key, n=HEADER_MAX):
        with self.get(key) as f:
            return f.read(n)

    def size(self, key):
        """Size in bytes, or None when the object does not exist."""
        try:
            return os.stat(self._path(key)).st_size
        except OSError as e:
            if e.errno == errno.ENOENT:
                return None
            raise TargetError('cannot stat %s: %s' % (self._path(key), _oserror(e)))

    def list(self, prefix=''):
        """Keys under ``prefix`` (sorted), temporary files excluded."""
        base = self._path(prefix)
        keys = []
        if not os.path.isdir(base):
            return keys
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for name in filenames:
                if name.startswith('.tmp.'):
                    continue
                full = os.path.join(dirpath, name)
                keys.append(os.path.relpath(full, os.path.join(self.root, self.prefix)).replace(os.sep, '/'))
        return sorted(keys)

    def delete(self, key):
        try:
            os.unlink(self._path(key))
        except OSError as e:
            if e.errno != errno.ENOENT:
                raise TargetError('cannot delete %s: %s' % (self._path(key), _oserror(e)))


class S3Target(object):
    """An S3 bucket (or an S3-compatible server through ``endpoint_url``)."""

    kind = 's3'

    def __init__(self, bucket, prefix='', endpoint_url=None, region=None,
                 access_key_id=None, secret_access_key=None, session_token=None):
        self.bucket = bucket
        self.prefix = prefix.strip('/')
        self.endpoint_url = endpoint_url or None
        self.region = region or None
        self._creds = (access_key_id or None, secret_access_key or None, session_token or None)
        self._client = None

    def describe(self):
        where = ' at %s' % self.endpoint_url if self.endpoint_url else ''
        return 's3://%s/%s%s' % (self.bucket, self.prefix, where)

    @property
    def client(self):
        if self._client is None:
            try:
                import boto3
                from botocore.config import Config
            except ImportError:
                raise TargetError('an S3 target needs boto3 on this host (Debian: python3-boto3)')
            kw = dict(config=Config(retries={'max_attempts': 3, 'mode': 'standard'},
                                    connect_timeout=10, read_timeout=60))
            if self.endpoint_url:
                kw['endpoint_url'] = self.endpoint_url
            if self.region:
                kw['region_name'] = self.region
            if self._creds[0]:
                kw.update(aws_access_key_id=self._creds[0], aws_secret_access_key=self._creds[1])
                if self._creds[2]:
                    kw['aws_session_token'] = self._creds[2]
            self._client = boto3.client('s3', **kw)
        return self._client

    def _key(self, key):
        return _join(self.prefix, key)

    def _fail(self, e, what):
        code, msg = _s3_error(e)
        if code in ('NoSuchBucket',):
            return TargetError('S3 bucket %s does not exist (%s): create it or fix backup_targets' % (self.bucket, what))
        if code in ('InvalidAccessKeyId', 'SignatureDoesNotMatch', 'AccessDenied', 'ExpiredToken', 'Forbidden', '403'):
            return TargetError('S3 refused %s on %s: %s (check the credentials and the bucket policy)'
                               % (what, self.describe(), code))
        return TargetError('S3 %s on %s failed: %s' % (what, self.describe(), msg))

    def check(self, write=True, under=''):
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as e:  # pylint: disable=broad-except
            code, dummy = _s3_error(e)
            if code in ('404', 'NoSuchBucket', 'NotFound'):
                raise TargetError('S3 bucket %s does not exist on %s: create it or fix backup_targets'
                                  % (self.bucket, self.endpoint_url or 'AWS'))
            raise self._fail(e, 'HeadBucket')
        if write:
            import uuid  # here: wal-push and wal-get never need it
            probe = _join(under, 'probe', uuid.uuid4().hex)
            self.put(probe, io.BytesIO(b'dine360 write probe\n'))
            self.delete(probe)

    def put(self, key, fileobj):
        if self.size(key) is not None:
            raise ObjectExists(key)
        try:
            self.client.upload_fileobj(fileobj, self.bucket, self._key(key))
        except Exception as e:  # pylint: disable=broad-except
            raise self._fail(e, 'upload of %s' % key)

    def get(self, key, **kwargs):
        """The object's body (a file-like stream); ``Range`` etc. pass through to GetObject."""
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key), **kwargs)['Body']
        except Exception as e:  # pylint: disable=broad-except
            code, dummy = _s3_error(e)
            if code in ('NoSuchKey', '404'):
                raise NotFoundError('%s not found in %s' % (key, self.describe()))
            raise self._fail(e, 'download of %s' % key)

    def read_head(self, key, n=HEADER_MAX):
        body = self.get(key, Range='bytes=0-%d' % (n - 1))
        try:
            return body.read()
        except Exception as e:  # pylint: disable=broad-except
            raise self._fail(e, 'download of %s' % key)

    def size(self, key):
        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._key(key))['ContentLength']
        except Exception as e:  # pylint: disable=broad-except
            code, dummy = _s3_error(e)
            if code in ('404', 'NoSuchKey', 'NotFound'):
                return None
            raise self._fail(e, 'HeadObject of %s' % key)

    def list(self, prefix=''):
        keys = []
        base = self._key(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        try:
            pages = self.client.get_paginator('list_objects_v2').paginate(Bucket=self.bucket, Prefix=base)
            for page in pages:
                for obj in page.get('Contents', []):
                    keys.append(obj['Key'][strip:])
        except Exception as e:  # pylint: disable=broad-except
            raise self._fail(e, 'listing of %s' % prefix)
        return sorted(keys)

    def delete(self, key):
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as e:  # pylint: disable=broad-except
            raise self._fail(e, 'delete of %s' % key)


def _s3_error(e):
    response = getattr(e, 'response', None) or {}
    err = response.get('Error', {})
    code = str(err.get('Code', '')) or type(e).__name__
    return code, '%s: %s' % (code, err.get('Message', str(e)))


def _oserror(e):
    if isinstance(e, OSError):
        return e.strerror or str(e)
    return str(e)


def _fsync_dir(directory):
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def make_target(spec):
    """A target from its configuration dict (``type: path`` or ``type: s3``)."""
    kind = spec.get('type', 'path')
    if kind == 'path':
        if not spec.get('path'):
            raise BackupError('a path target needs "path"')
        return PathTarget(spec['path'], spec.get('prefix', ''), bool(spec.get('require_mount', False)))
    if kind == 's3':
        if not spec.get('bucket'):
            raise BackupError('an s3 target needs "bucket"')
        return S3Target(spec['bucket'], spec.get('prefix', ''), spec.get('endpoint_url'), spec.get('region'),
                        spec.get('access_key_id'), spec.get('secret_access_key'), spec.get('session_token'))
    raise BackupError('unknown backup target type %r: use path or s3' % kind)


# --- compression -------------------------------------------------------------------

def compressor(codec, level=None):
    """A function bytes -> bytes for the codec."""
    if codec == 'zstd':
        import zstandard
        c = zstandard.ZstdCompressor(level=level if level is not None else 1)
        return c.compress
    if codec == 'lz4':
        import lz4.frame
        return lambda data: lz4.frame.compress(data, compression_level=level or 0)
    if codec == 'none':
        return lambda data: data
    raise BackupError('unknown compression %r: use one of %s' % (codec, ', '.join(CODECS)))


def decompressor(codec):
    if codec == 'zstd':
        import zstandard
        d = zstandard.ZstdDecompressor()
        return lambda data: d.decompress(data, max_output_size=1 << 31)
    if codec == 'lz4':
        import lz4.frame
        return lz4.frame.decompress
    if codec == 'none':
        return lambda data: data
    raise BackupError('unknown compression %r in archive' % codec)


# --- the WAL object format ---------------------------------------------------------

def encode_wal(data, name, codec='zstd', level=None):
    """The stored object for one WAL file: header + compressed payload."""
    header = {'name': name, 'codec': codec, 'size': len(data), 'sha256': hashlib.sha256(data).hexdigest()}
    return MAGIC + json.dumps(header, sort_keys=True).encode('ascii') + b'\n' + compressor(codec, level)(data), header


def parse_header(blob):
    """The header dict of a stored WAL object (from its first bytes)."""
    if not blob.startswith(MAGIC):
        raise ChecksumError('not a dine360 WAL object (bad magic)')
    end = blob.find(b'\n', len(MAGIC))
    if end < 0:
        raise ChecksumError('truncated dine360 WAL object header')
    header = json.loads(blob[len(MAGIC):end].decode('ascii'))
    header['_offset'] = end + 1
    return header


def decode_wal(blob):
    """Uncompressed WAL data from a stored object; the checksum and size are verified."""
    header = parse_header(blob[:HEADER_MAX])
    try:
        data = decompressor(header['codec'])(blob[header['_offset']:])
    except BackupError:
        raise
    except Exception as e:  # pylint: disable=broad-except
        raise ChecksumError('%s: the stored data is corrupt (%s)' % (header.get('name'), e))
    if len(data) != header['size'] or hashlib.sha256(data).hexdigest() != header['sha256']:
        raise ChecksumError('%s: checksum mismatch (stored %s, %d bytes; read %s, %d bytes)'
                            % (header.get('name'), header['sha256'], header['size'],
                               hashlib.sha256(data).hexdigest(), len(data)))
    return data
