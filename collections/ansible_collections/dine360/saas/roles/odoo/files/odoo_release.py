"""Identify and pack an Odoo source directory on the controller (used by the odoo role).

    odoo_release.py id DIR            print the release id of DIR
    odoo_release.py pack DIR OUT      write DIR (without .git and caches) to OUT (tar.gz)

The id is the git commit when DIR is a clean git checkout; otherwise (a dirty checkout
or a plain directory) it is a digest of every file's path, size and mtime, so any
change to the tree is a new release.
"""
import hashlib
import os
import subprocess
import sys
import tarfile

SKIP_DIRS = {'.git', '__pycache__', '.tox', 'node_modules'}


def _git(path, *args):
    try:
        out = subprocess.run(['git', '-C', path] + list(args), check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


def release_id(path):
    if os.path.isdir(os.path.join(path, '.git')) or os.path.isfile(os.path.join(path, '.git')):
        head = _git(path, 'rev-parse', 'HEAD')
        if head and _git(path, 'status', '--porcelain', '--untracked-files=no') == '':
            return 'g' + head[:12]
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in sorted(files):
            if name.endswith('.pyc'):
                continue
            full = os.path.join(root, name)
            st = os.lstat(full)
            digest.update(('%s\0%d\0%d\n' % (os.path.relpath(full, path), st.st_size, int(st.st_mtime))).encode())
    return 't' + digest.hexdigest()[:12]


def pack(path, out):
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + '.tmp%d' % os.getpid()

    def keep(info):
        parts = info.name.split('/')
        if any(p in SKIP_DIRS for p in parts) or info.name.endswith('.pyc'):
            return None
        info.uid = info.gid = 0
        info.uname = info.gname = 'root'
        return info

    try:
        with tarfile.open(tmp, 'w:gz', compresslevel=1) as tar:
            for entry in sorted(os.listdir(path)):
                if entry in SKIP_DIRS:
                    continue
                tar.add(os.path.join(path, entry), arcname=entry, filter=keep)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def main(argv):
    if len(argv) == 3 and argv[1] == 'id':
        print(release_id(argv[2]))
        return 0
    if len(argv) == 4 and argv[1] == 'pack':
        pack(argv[2], argv[3])
        return 0
    sys.stderr.write(__doc__)
    return 2


if __name__ == '__main__':
    sys.exit(main(sys.argv))
