"""tools/check_argument_specs.py on temporary role trees, good and bad."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "tools" / "check_argument_specs.py"

GOOD_DEFAULTS = textwrap.dedent("""\
    ---
    # Port.
    demo_port: 8080
    # Users.
    demo_users: []
    """)

GOOD_SPECS = textwrap.dedent("""\
    ---
    argument_specs:
      main:
        short_description: Demo
        options:
          demo_port:
            type: int
            default: 8080
            description: Port.
          demo_users:
            type: list
            elements: str
            default: []
            description: Users.
          demo_token:
            type: str
            required: true
            description: Token.
          demo_password:
            type: str
            no_log: true
            description:
              - Password of the admin.
              - A secret; preflight fails when it is missing.
          demo_cluster:
            type: str
            description: Name of the cluster. Required; no default.
    """)


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def make_role(roles_dir, name="demo", defaults=GOOD_DEFAULTS, specs=GOOD_SPECS, readme="# demo\n"):
    role = roles_dir / name
    role.mkdir(parents=True)
    if defaults is not None:
        _write(role / "defaults" / "main.yml", defaults)
    if specs is not None:
        _write(role / "meta" / "argument_specs.yml", specs)
    if readme is not None:
        _write(role / "README.md", readme)
    return role


def run(roles_dir):
    proc = subprocess.run([sys.executable, str(TOOL), "--roles-dir", str(roles_dir)],
                          check=False, capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture
def roles_dir(tmp_path):
    path = tmp_path / "roles"
    path.mkdir()
    return path


def test_good_roles_pass(roles_dir):
    make_role(roles_dir, "alpha")
    make_role(roles_dir, "beta")
    rc, out = run(roles_dir)
    assert rc == 0, out
    assert "OK: 2 roles" in out
    assert "alpha" in out and "beta" in out


def test_default_without_option_fails(roles_dir):
    make_role(roles_dir, defaults=GOOD_DEFAULTS + "demo_undocumented: 1\ndemo_other: 2\n")
    rc, out = run(roles_dir)
    assert rc == 1
    assert "FAIL demo" in out
    assert "(missing): demo_other, demo_undocumented" in out


def test_option_without_default_fails(roles_dir):
    specs = GOOD_SPECS + textwrap.indent(textwrap.dedent("""\
        demo_forgotten:
          type: int
          description: Something that lost its default.
        """), " " * 6)
    make_role(roles_dir, specs=specs)
    rc, out = run(roles_dir)
    assert rc == 1
    assert "(extra): demo_forgotten" in out
    # required: true and options documented as secret / required are accepted.
    for name in ("demo_token", "demo_password", "demo_cluster"):
        assert name not in out


def test_required_false_without_docs_fails(roles_dir):
    specs = GOOD_SPECS + textwrap.indent(textwrap.dedent("""\
        demo_flag:
          type: bool
          required: false
          description: A flag.
        """), " " * 6)
    make_role(roles_dir, specs=specs)
    rc, out = run(roles_dir)
    assert rc == 1
    assert "(extra): demo_flag" in out


@pytest.mark.parametrize("missing, message", [
    ("specs", "missing meta/argument_specs.yml"),
    ("defaults", "missing defaults/main.yml"),
    ("readme", "missing README.md"),
])
def test_missing_files_fail(roles_dir, missing, message):
    make_role(roles_dir, "good")
    make_role(roles_dir, "bad", **{missing: None})
    rc, out = run(roles_dir)
    assert rc == 1
    assert "FAIL bad:" in out and message in out
    assert "FAIL good" not in out
    assert "1 of 2 roles failed" in out


def test_every_problem_of_a_role_is_listed(roles_dir):
    make_role(roles_dir, readme=None, defaults=GOOD_DEFAULTS + "demo_extra_default: x\n")
    rc, out = run(roles_dir)
    assert rc == 1
    assert "missing README.md" in out
    assert "(missing): demo_extra_default" in out


def test_no_main_entry_point_fails(roles_dir):
    make_role(roles_dir, specs="---\nargument_specs:\n  other:\n    options: {}\n")
    rc, out = run(roles_dir)
    assert rc == 1
    assert "no argument_specs.main entry point" in out


def test_invalid_yaml_fails(roles_dir):
    make_role(roles_dir, defaults="demo_port: [unclosed\n")
    rc, out = run(roles_dir)
    assert rc == 1
    assert "cannot read" in out


def test_vault_and_unsafe_tags_and_empty_defaults(roles_dir):
    defaults = """\
        ---
        demo_port: !unsafe "{{ not_templated }}"
        demo_users: !vault |
          $ANSIBLE_VAULT;1.1;AES256
          3133
        """
    make_role(roles_dir, "tagged", defaults=defaults)
    make_role(roles_dir, "empty", defaults="---\n", specs="---\nargument_specs:\n  main:\n    options: {}\n")
    rc, out = run(roles_dir)
    assert rc == 0, out


def test_defaults_main_directory_and_yaml_extensions(roles_dir):
    role = make_role(roles_dir, defaults=None, specs=None)
    _write(role / "defaults" / "main" / "a.yml", "demo_port: 1\n")
    _write(role / "defaults" / "main" / "b.yaml", "demo_users: []\n")
    _write(role / "meta" / "argument_specs.yaml", GOOD_SPECS)
    rc, out = run(roles_dir)
    assert rc == 0, out


def test_no_roles_fails(roles_dir):
    rc, out = run(roles_dir)
    assert rc == 1
    assert "no roles found" in out


def test_missing_roles_dir_is_a_usage_error(tmp_path):
    rc, out = run(tmp_path / "nope")
    assert rc == 2
    assert "does not exist" in out
