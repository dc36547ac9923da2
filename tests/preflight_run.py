"""Run a playbook's preflight (`--tags preflight`) against a throwaway local inventory.

Shared by the preflight tests: the hosts use the local connection, so nothing is installed
anywhere; the run's exit code, output and the changed= counts of its recap come back.
"""
import os
import re
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
LOCAL = {'ansible_connection': 'local', 'ansible_become': False, 'ansible_python_interpreter': sys.executable}


def run_preflight(tmp_path, playbook, hosts, group_vars, overrides=None, drop=(), tags='preflight', extra=()):
    """hosts: the inventory's `all.children`; group_vars: for `all` (LOCAL is added);
    extra: more ansible-playbook arguments."""
    inv = tmp_path / 'inv'
    (inv / 'group_vars').mkdir(parents=True, exist_ok=True)
    (inv / 'hosts.yml').write_text(yaml.safe_dump({'all': {'children': hosts}}))
    gv = dict(LOCAL, **group_vars)
    gv.update(overrides or {})
    for k in drop:
        gv.pop(k, None)
    (inv / 'group_vars' / 'all.yml').write_text(yaml.safe_dump(gv))
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ['PATH'], ANSIBLE_NOCOLOR='1',
               ANSIBLE_STDOUT_CALLBACK='ansible.builtin.default')
    p = subprocess.run([os.path.join(BIN, 'ansible-playbook'), '-i', str(inv), playbook, '--tags', tags, *extra],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    out = p.stdout + p.stderr
    return p.returncode, out, [int(c) for c in re.findall(r'changed=(\d+)', out)]
