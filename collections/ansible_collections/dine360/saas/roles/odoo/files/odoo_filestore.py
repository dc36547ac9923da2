"""Give each new restaurant a copy of its group template's filestore (run as Odoo's user).

    odoo_filestore.py DATA_DIR TEMPLATE TENANT [TENANT ...]
    odoo_filestore.py --retire DATA_DIR TENANT [TENANT ...]

Odoo writes an attachment's file once, under a name derived from its checksum, and
never changes it in place, so the copy is made of hard links: instant, and no extra
space until one side deletes or replaces a file. A tenant that already has a filestore
is left alone. Prints a JSON object: {"copied": [...], "template_missing": bool}.

--retire moves the filestores of offboarded restaurants aside, to
DATA_DIR/filestore-offboarded/<tenant>-<UTC time> (never deleted here), so that a new
restaurant of the same name starts from its template's files. Prints {"retired": [...]}.
"""
import json
import os
import shutil
import sys
import time


def copy_tree(src, dst):
    tmp = '%s.copying-%d' % (dst, os.getpid())
    try:
        shutil.copytree(src, tmp, copy_function=os.link)
        os.rename(tmp, dst)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)


def retire(data_dir, tenants):
    root = os.path.join(data_dir, 'filestore')
    aside = os.path.join(data_dir, 'filestore-offboarded')
    retired = []
    for tenant in tenants:
        src = os.path.join(root, tenant)
        if os.path.isdir(src):
            os.makedirs(aside, mode=0o750, exist_ok=True)
            os.rename(src, os.path.join(aside, '%s-%s' % (tenant, time.strftime('%Y%m%dT%H%M%SZ', time.gmtime()))))
            retired.append(tenant)
    print(json.dumps(dict(retired=retired)))
    return 0


def main(argv):
    if len(argv) >= 3 and argv[1] == '--retire':
        return retire(argv[2], argv[3:])
    if len(argv) < 4:
        sys.stderr.write(__doc__)
        return 2
    data_dir, template, tenants = argv[1], argv[2], argv[3:]
    root = os.path.join(data_dir, 'filestore')
    src = os.path.join(root, template)
    result = dict(copied=[], template_missing=not os.path.isdir(src))
    if not result['template_missing']:
        for tenant in tenants:
            dst = os.path.join(root, tenant)
            if not os.path.exists(dst):
                copy_tree(src, dst)
                result['copied'].append(tenant)
    print(json.dumps(result))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
