"""The certbot role's preflight: bad input stops the run with a message naming the variable,
and the TSIG secret never appears in the output.

Runs the role's preflight.yml (as playbooks/app_tier.yml does) against a throwaway inventory
of two hosts that use the local connection: nothing is installed anywhere.
"""
import os
import re
import subprocess
import sys

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
TSIG = 'Tq9' * 14 + 'Zz'  # 44 characters of letters and digits, as scripts/gen_secrets.py writes
AWS_SECRET = 'AwsS3cr3t' * 4

PLAYBOOK = """
- name: Certbot preflight
  hosts: web_balancers
  gather_facts: false
  tasks:
    - name: Check the certbot role's input
      ansible.builtin.include_role:
        name: dine360.saas.certbot
        tasks_from: preflight.yml
"""

RFC2136 = {
    'certbot_dns_provider': 'rfc2136', 'certbot_rfc2136_server': '127.0.97.53',
    'certbot_rfc2136_tsig_secret': TSIG,
}


def run(tmp_path, overrides=None, drop=()):
    inv = tmp_path / 'inv'
    (inv / 'group_vars').mkdir(parents=True, exist_ok=True)
    hosts_yml = {'all': {'children': {'web_balancers': {'hosts': {
        'w%d' % i: {'dine360_node_address': '127.0.97.%d' % (i + 10)} for i in (1, 2)}}}}}
    (inv / 'hosts.yml').write_text(yaml.safe_dump(hosts_yml))
    gv = {'ansible_connection': 'local', 'ansible_become': False,
          'ansible_python_interpreter': sys.executable, 'saas_domain': 'dine360.example'}
    gv.update(overrides or {})
    for k in drop:
        gv.pop(k, None)
    (inv / 'group_vars' / 'all.yml').write_text(yaml.safe_dump(gv))
    playbook = tmp_path / 'preflight.yml'
    playbook.write_text(PLAYBOOK)
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ['PATH'], ANSIBLE_NOCOLOR='1',
               ANSIBLE_STDOUT_CALLBACK='ansible.builtin.default',
               ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, 'collections'))
    p = subprocess.run([os.path.join(BIN, 'ansible-playbook'), '-i', str(inv), str(playbook)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = p.stdout + p.stderr
    return p.returncode, out, [int(c) for c in re.findall(r'changed=(\d+)', out)]


@pytest.mark.parametrize('case, overrides', [
    ('route53 with the instance role', {}),
    ('route53 with keys', {'certbot_route53_access_key_id': 'AKIAEXAMPLE', 'certbot_route53_secret_access_key': AWS_SECRET}),
    ('rfc2136', RFC2136),
    ('no e-mail, staging', {'certbot_email': '', 'certbot_acme_server': 'https://acme-staging-v02.api.letsencrypt.org/directory'}),
])
def test_valid_input_passes(tmp_path, case, overrides):
    rc, out, changed = run(tmp_path, overrides)
    assert rc == 0, f'{case}\n{out[-3000:]}'
    assert changed and not any(changed), out[-2000:]
    assert TSIG not in out and AWS_SECRET not in out


@pytest.mark.parametrize('case, kwargs, expect', [
    ('missing domain', {'drop': ['saas_domain']}, ['saas_domain']),
    ('empty domain', {'overrides': {'saas_domain': ''}}, ['saas_domain']),
    ('domain with a trailing dot', {'overrides': {'saas_domain': 'dine360.example.'}}, ['saas_domain']),
    ('name outside the domain', {'overrides': {'certbot_domains': ['*.dine360.example', 'other.example']}},
     ['certbot_domains', 'other.example']),
    ('unknown provider', {'overrides': {'certbot_dns_provider': 'cloudflare'}}, ['certbot_dns_provider', 'cloudflare']),
    ('rfc2136 without server', {'overrides': dict(RFC2136, certbot_rfc2136_server='')}, ['certbot_rfc2136_server']),
    ('rfc2136 server by name', {'overrides': dict(RFC2136, certbot_rfc2136_server='ns1.dine360.example')},
     ['certbot_rfc2136_server', 'host names']),
    ('rfc2136 without TSIG secret', {'overrides': dict(RFC2136), 'drop': ['certbot_rfc2136_tsig_secret']},
     ['certbot_rfc2136_tsig_secret']),
    ('rfc2136 TSIG secret not base64', {'overrides': dict(RFC2136, certbot_rfc2136_tsig_secret='not base64 at all!!')},
     ['certbot_rfc2136_tsig_secret']),
    ('rfc2136 unknown algorithm', {'overrides': dict(RFC2136, certbot_rfc2136_tsig_algorithm='HMAC-SHA3')},
     ['certbot_rfc2136_tsig_algorithm']),
    ('one AWS key only', {'overrides': {'certbot_route53_access_key_id': 'AKIAEXAMPLE'}},
     ['certbot_route53_access_key_id', 'certbot_route53_secret_access_key']),
    ('bad e-mail', {'overrides': {'certbot_email': 'ops at dine360'}}, ['certbot_email']),
    ('plain http ACME server', {'overrides': {'certbot_acme_server': 'http://acme.example/dir'}}, ['certbot_acme_server']),
    ('missing CA bundle', {'overrides': {'certbot_acme_ca_bundle': '/nonexistent/acme-ca.pem'}},
     ['certbot_acme_ca_bundle', '/nonexistent/acme-ca.pem']),
])
def test_bad_input_stops_in_preflight(tmp_path, case, kwargs, expect):
    rc, out, _ = run(tmp_path, **kwargs)
    assert rc != 0, f'{case}: the run passed\n{out[-2000:]}'
    for text in expect:
        assert text in out, f'{case}: {text!r} not in the output\n{out[-3000:]}'
    assert TSIG not in out and AWS_SECRET not in out
