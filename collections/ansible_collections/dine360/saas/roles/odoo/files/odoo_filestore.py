#!/usr/bin/python3
"""Give each new restaurant a copy of its group template's filestore (run as Odoo's user).

    odoo_filestore.py DATA_DIR TEMPLATE TENANT [TENANT ...]

Odoo writes an attachment's file once, under a name derived from its checksum, and
never changes it in place, so the copy is made of hard links: instant, and no extra
space until one side deletes or replaces a file. A tenant that already has a filestore
is left alone. Prints a JSON object: {"copied": [...], "template_missing": bool}.
"""
import json
import os
import shutil
import sys


def copy_tree(src, dst):
    tmp = '%s.copying-%d' % (dst, os.getpid())
    try:
        shutil.copytree(src, tmp, copy_function=os.link)
        os.rename(tmp, dst)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)


def main(argv):
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
