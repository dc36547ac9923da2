#!/usr/bin/env python3
"""Generate a role's meta/argument_specs.yml and the README "Role Variables" table
from defaults/main.yml, using the comment above each default as its description.

    python tools/gen_role_docs.py ROLE [ROLE ...]

Secrets (variables without a default that preflight requires) are listed in
roles/<role>/meta/secrets.txt as "name: description" lines. Run it after changing
defaults; CI checks the result with tools/check_argument_specs.py.
"""
import os
import re
import sys

import yaml

ROLES = os.path.join(os.path.dirname(__file__), '..', 'collections', 'ansible_collections', 'dine360', 'saas', 'roles')


class _Dumper(yaml.SafeDumper):
    """Indent block sequences inside mappings, as yamllint expects."""

    def increase_indent(self, flow=False, indentless=False):
        return super().increase_indent(flow, False)


def parse_defaults(path):
    comments, out = [], []
    with open(path) as f:
        text = f.read()
    data = yaml.safe_load(text) or {}
    for line in text.splitlines():
        if line.startswith('#'):
            comments.append(line.lstrip('#').strip())
        elif re.match(r'^[a-z_][a-z0-9_]*:', line):
            key = line.split(':', 1)[0]
            out.append((key, ' '.join(comments) or key.replace('_', ' '), data[key]))
            comments = []
        elif not line.strip():
            comments = []
    return out


def type_of(value):
    if isinstance(value, str) and '{{' in value:
        return 'raw'
    if isinstance(value, bool):
        return 'bool'
    if isinstance(value, int):
        return 'int'
    if isinstance(value, float):
        return 'float'
    if isinstance(value, list):
        return 'list'
    if isinstance(value, dict):
        return 'dict'
    return 'str'


def main(role):
    base = os.path.join(ROLES, role)
    opts = {}
    rows = []
    for key, desc, value in parse_defaults(os.path.join(base, 'defaults', 'main.yml')):
        t = type_of(value)
        o = {'description': desc, 'type': t}
        if t == 'list':
            o['elements'] = 'raw'
        if t != 'raw':
            o['default'] = value
        opts[key] = o
        rows.append('| `%s` | `%s` | %s |' % (key, yaml.safe_dump(value, default_flow_style=True, width=1000).strip().replace('\n...', '').replace('|', '\\|'), desc))
    secrets = os.path.join(base, 'meta', 'secrets.txt')
    if os.path.exists(secrets):
        for line in open(secrets):
            if ':' in line:
                k, d = line.split(':', 1)
                opts[k.strip()] = {'description': 'Secret, required (checked in preflight): ' + d.strip(), 'type': 'str', 'no_log': True}
                rows.append('| `%s` | *(secret, required)* | %s |' % (k.strip(), d.strip()))
    spec = {'argument_specs': {'main': {
        'short_description': 'dine360.saas %s role' % role,
        'description': ['See roles/%s/README.md.' % role],
        'options': opts}}}
    with open(os.path.join(base, 'meta', 'argument_specs.yml'), 'w') as f:
        f.write('---\n# Generated from defaults/main.yml by tools/gen_role_docs.py\n')
        yaml.dump(spec, f, Dumper=_Dumper, sort_keys=False, width=120)
    table = '| Variable | Default | Description |\n| --- | --- | --- |\n' + '\n'.join(rows) + '\n'
    readme = os.path.join(base, 'README.md')
    if os.path.exists(readme):
        text = open(readme).read()
        text = re.sub(r'(<!-- vars:start -->\n).*?(<!-- vars:end -->)', lambda m: m.group(1) + table + m.group(2), text, flags=re.S)
        open(readme, 'w').write(text)
    print('%s: %d options' % (role, len(opts)))


if __name__ == '__main__':
    for r in sys.argv[1:]:
        main(r)
