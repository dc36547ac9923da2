"""The repository's root group_vars/ reaches every host, whatever inventory and playbook.

Real ansible-inventory and ansible-playbook runs (no connection to any host is made): the
collection's vars plugin dine360.saas.org_group_vars, enabled in ansible.cfg, loads the
organisation-wide group_vars/ beside ansible.cfg (or $DINE360_ORG_VARS_DIR) below the
inventory's own group variables.

Note: ansible-inventory and ad hoc `ansible` load the group_vars/ of their current directory
as "playbook" group_vars when no --playbook-dir is given, so from the repository root they
would show the root group_vars even without the plugin. The tests pass --playbook-dir (an
empty directory) so that only the plugin can bring those values in.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
ORG_ENV = "DINE360_ORG_VARS_DIR"


def _env(**extra):
    """The caller's environment without Ansible overrides, with the venv's tools first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_") and k != ORG_ENV}
    env["PATH"] = os.pathsep.join([str(VENV_BIN), env.get("PATH", "")])
    env["ANSIBLE_NOCOLOR"] = "1"
    env.update(extra)
    return env


def _run(args, cwd=REPO, **env):
    tool = VENV_BIN / args[0]
    cmd = [str(tool) if tool.exists() else args[0]] + [str(a) for a in args[1:]]
    proc = subprocess.run(cmd, check=False, cwd=str(cwd), env=_env(**env), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, "%s failed (%d)\nstdout:\n%s\nstderr:\n%s" % (
        " ".join(cmd), proc.returncode, proc.stdout, proc.stderr)
    return proc


def _host_vars(inventory, host, playbook_dir, cwd=REPO, **env):
    proc = _run(["ansible-inventory", "-i", inventory, "--host", host, "--playbook-dir", playbook_dir], cwd=cwd, **env)
    return json.loads(proc.stdout)


def _host_vars_default_playbook_dir(inventory, host):
    return json.loads(_run(["ansible-inventory", "-i", inventory, "--host", host]).stdout)


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


@pytest.fixture
def empty_dir(tmp_path):
    path = tmp_path / "no-playbook-vars"
    path.mkdir()
    return path


@pytest.fixture
def org_and_inventory(tmp_path):
    """An organisation group_vars dir and an inventory overriding part of it."""
    org = tmp_path / "org" / "group_vars"
    _write(org / "all.yml", """\
        ---
        shared_key: org
        inline_key: org
        org_only_key: org
        org_templated: "{{ org_only_key }}-templated"
        """)
    _write(org / "web" / "10-main.yml", "web_dir_key: org-web\n")
    _write(org / "web" / "20-json.json", '{"web_json_key": "org-json"}\n')
    # A file named after a host: the plugin loads nothing for hosts.
    _write(org / "h1.yml", "org_host_file_key: must-not-load\n")

    inv = tmp_path / "inventory"
    _write(inv / "hosts.yml", """\
        ---
        all:
          vars:
            inline_key: inventory-inline
          children:
            web:
              hosts:
                h1:
                  ansible_connection: local
                  ansible_python_interpreter: "{{ ansible_playbook_python }}"
        """)
    _write(inv / "group_vars" / "all.yml", "shared_key: inventory\n")
    return org, inv


def test_root_group_vars_reach_lab_host(empty_dir):
    hostvars = _host_vars("inventories/lab", "pg1", empty_dir)
    assert hostvars["dine360_org_policy_marker"] == "root-group-vars"
    # The lab inventory's own values are still there.
    assert hostvars["dine360_environment"] == "lab"
    assert hostvars["ansible_connection"] == "docker"


def test_root_group_vars_come_from_the_plugin(empty_dir):
    """Negative control: without the plugin the root group_vars do not reach the host."""
    hostvars = _host_vars("inventories/lab", "pg1", empty_dir, ANSIBLE_VARS_ENABLED="host_group_vars")
    assert "dine360_org_policy_marker" not in hostvars
    assert hostvars["dine360_environment"] == "lab"


def test_root_group_vars_reach_host_from_repo_root():
    """What an operator types: ansible-inventory from the repository root."""
    hostvars = _host_vars_default_playbook_dir("inventories/lab", "pg1")
    assert hostvars["dine360_org_policy_marker"] == "root-group-vars"


def test_inventory_group_vars_override_org_vars(org_and_inventory, empty_dir):
    org, inv = org_and_inventory
    hostvars = _host_vars(inv, "h1", empty_dir, **{ORG_ENV: str(org)})
    assert hostvars["shared_key"] == "inventory"            # inventory group_vars/ win
    assert hostvars["inline_key"] == "inventory-inline"     # so do vars in the inventory file
    assert hostvars["org_only_key"] == "org"
    assert hostvars["web_dir_key"] == "org-web"             # group_vars/<group>/ directories
    assert hostvars["web_json_key"] == "org-json"
    assert "org_host_file_key" not in hostvars
    # DINE360_ORG_VARS_DIR replaces the root group_vars beside ansible.cfg.
    assert "dine360_org_policy_marker" not in hostvars


def test_missing_org_dir_warns_and_loads_nothing(org_and_inventory, empty_dir, tmp_path):
    _, inv = org_and_inventory
    proc = _run(["ansible-inventory", "-i", inv, "--host", "h1", "--playbook-dir", empty_dir],
                **{ORG_ENV: str(tmp_path / "does-not-exist")})
    hostvars = json.loads(proc.stdout)
    assert hostvars["shared_key"] == "inventory"
    assert "org_only_key" not in hostvars
    assert "dine360_org_policy_marker" not in hostvars
    assert "is not a directory" in proc.stderr


def test_playbook_outside_repo_root_sees_root_group_vars(tmp_path):
    """ansible-playbook from the repository root, with inventory and playbook elsewhere."""
    inv = tmp_path / "inventory"
    _write(inv / "hosts.yml", """\
        ---
        all:
          hosts:
            h1:
              ansible_connection: local
              ansible_python_interpreter: "{{ ansible_playbook_python }}"
        """)
    play = tmp_path / "elsewhere" / "check.yml"
    _write(play, """\
        ---
        - name: Root group_vars reach a playbook outside the repository
          hosts: all
          gather_facts: false
          connection: local
          tasks:
            - name: The organisation marker is set
              ansible.builtin.assert:
                that:
                  - dine360_org_policy_marker == 'root-group-vars'
        """)
    proc = _run(["ansible-playbook", "-i", inv, play])
    assert "h1" in proc.stdout and "failed=0" in proc.stdout


def test_playbook_and_inventory_group_vars_override_org_vars(org_and_inventory, tmp_path):
    """Playbook-adjacent group_vars keep their normal, higher, precedence."""
    org, inv = org_and_inventory
    _write(org / "all" / "extra.yml", "playbook_key: org\n")  # group dir replaces all.yml ...
    (org / "all.yml").rename(org / "all" / "main.yml")         # ... so move all.yml into it
    play_dir = tmp_path / "playbooks"
    _write(play_dir / "group_vars" / "all.yml", "playbook_key: playbook\n")
    _write(play_dir / "check.yml", """\
        ---
        - name: Precedence of organisation group_vars
          hosts: all
          gather_facts: false
          connection: local
          tasks:
            - name: Inventory and playbook win, the organisation fills the gaps
              ansible.builtin.assert:
                that:
                  - playbook_key == 'playbook'
                  - shared_key == 'inventory'
                  - inline_key == 'inventory-inline'
                  - org_only_key == 'org'
                  - org_templated == 'org-templated'
                  - web_dir_key == 'org-web'
                  - dine360_org_policy_marker is not defined
        """)
    proc = _run(["ansible-playbook", "-i", inv, play_dir / "check.yml"], cwd=tmp_path, **{
        ORG_ENV: str(org), "ANSIBLE_CONFIG": str(REPO / "ansible.cfg")})
    assert "failed=0" in proc.stdout


def test_host_keys_are_checked_for_every_ssh_inventory():
    """ansible.cfg leaves host key checking on (the lab reaches its containers without SSH)."""
    proc = _run(["ansible-config", "dump", "--only-changed", "--format", "json"])
    assert proc.returncode == 0, proc.stderr
    changed = {e["name"]: e.get("value") for e in json.loads(proc.stdout) if isinstance(e, dict) and "name" in e}
    assert "HOST_KEY_CHECKING" not in changed, "ansible.cfg turns host key checking off for every inventory"
    proc = _run(["ansible-inventory", "-i", "inventories/lab", "--list"])
    assert proc.returncode == 0, proc.stderr
    hostvars = json.loads(proc.stdout)["_meta"]["hostvars"]
    assert hostvars and all(v.get("ansible_connection") == "docker" for v in hostvars.values()), (
        "a lab host reached over SSH would need its host key")
