#!/usr/bin/env python3
"""Check that every role's meta/argument_specs.yml matches its defaults/main.yml.

For each role directory under the roles directory (by default the dine360.saas collection's
roles/):

* the role must have meta/argument_specs.yml, defaults/main.yml and README.md
  (meta/argument_specs.yaml, defaults/main.yaml and a defaults/main/ directory are accepted,
  as Ansible accepts them);
* argument_specs must have a ``main`` entry point with ``options``;
* every key of defaults/main.yml must be an option of the ``main`` entry point (missing);
* every option without a default must be ``required: true`` or be documented as a secret
  or as required, or as an optional per-host setting: its description mentions "secret",
  "required" or "optional per-host" (extra).

Prints every problem, role by role, and a summary. Exit status: 0 when every role passes,
1 when a role has a problem (or no role was found), 2 on a usage error.

Usage: tools/check_argument_specs.py [--roles-dir DIR]
"""

import argparse
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROLES_DIR = REPO / "collections" / "ansible_collections" / "dine360" / "saas" / "roles"
DOC_MARKERS = ("secret", "required", "optional per-host")


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads Ansible's !vault and !unsafe tags as plain strings."""


def _tagged_scalar(loader, node):
    return loader.construct_scalar(node)


_Loader.add_constructor("!vault", _tagged_scalar)
_Loader.add_constructor("!unsafe", _tagged_scalar)


class RoleError(Exception):
    """A problem that stops the check of one role."""


def _load_yaml(path):
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f, Loader=_Loader)  # a SafeLoader subclass
    except (OSError, yaml.YAMLError) as e:
        raise RoleError("cannot read %s: %s" % (path, e)) from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RoleError("%s is not a mapping" % path)
    return data


def _first_existing(*paths):
    for path in paths:
        if path.exists():
            return path
    return None


def _default_files(role):
    """The files Ansible reads as the role's main defaults, in load order."""
    main_dir = role / "defaults" / "main"
    if main_dir.is_dir():
        return sorted(p for p in main_dir.rglob("*")
                      if p.is_file() and p.suffix in (".yml", ".yaml", ".json")
                      and not any(part.startswith(".") for part in p.relative_to(main_dir).parts))
    found = _first_existing(role / "defaults" / "main.yml", role / "defaults" / "main.yaml")
    return [found] if found else []


def _description_text(option):
    description = option.get("description", "")
    if isinstance(description, (list, tuple)):
        description = " ".join(str(d) for d in description)
    return str(description or "")


def _documented_without_default(option):
    if not isinstance(option, dict):
        return False
    if option.get("required") is True:
        return True
    text = _description_text(option).lower()
    return any(marker in text for marker in DOC_MARKERS)


def check_role(role):
    """Return the list of problems of one role directory (empty when it passes)."""
    problems = []

    if not (role / "README.md").is_file():
        problems.append("missing README.md")

    specs_file = _first_existing(role / "meta" / "argument_specs.yml", role / "meta" / "argument_specs.yaml")
    if specs_file is None:
        problems.append("missing meta/argument_specs.yml")

    default_files = _default_files(role)
    if not default_files:
        problems.append("missing defaults/main.yml")

    if specs_file is None or not default_files:
        return problems

    defaults = {}
    options = None
    try:
        for path in default_files:
            defaults.update(_load_yaml(path))
        specs = _load_yaml(specs_file).get("argument_specs")
        if not isinstance(specs, dict) or not isinstance(specs.get("main"), dict):
            raise RoleError("%s has no argument_specs.main entry point" % specs_file.relative_to(role))
        options = specs["main"].get("options") or {}
        if not isinstance(options, dict):
            raise RoleError("argument_specs.main.options in %s is not a mapping" % specs_file.relative_to(role))
    except RoleError as e:
        return problems + [str(e)]

    missing = sorted(k for k in defaults if k not in options)
    extra = sorted(k for k in options if k not in defaults and not _documented_without_default(options[k]))
    if missing:
        problems.append("defaults without an option in argument_specs.main.options (missing): %s" % ", ".join(missing))
    if extra:
        problems.append("options without a default that are neither required: true nor documented as "
                        "secret/required (extra): %s" % ", ".join(extra))
    return problems


def find_roles(roles_dir):
    return sorted(p for p in roles_dir.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--roles-dir", type=Path, default=DEFAULT_ROLES_DIR,
                        help="directory holding one directory per role (default: %(default)s)")
    args = parser.parse_args(argv)

    roles_dir = args.roles_dir
    if not roles_dir.is_dir():
        parser.error("roles directory %s does not exist" % roles_dir)

    roles = find_roles(roles_dir)
    if not roles:
        print("FAIL: no roles found under %s" % roles_dir)
        return 1

    failed = 0
    for role in roles:
        problems = check_role(role)
        if problems:
            failed += 1
            print("FAIL %s:" % role.name)
            for problem in problems:
                print("  - %s" % problem)

    if failed:
        print("argument specs: %d of %d roles failed under %s" % (failed, len(roles), roles_dir))
        return 1
    print("argument specs OK: %d roles checked under %s (%s)" % (
        len(roles), roles_dir, ", ".join(r.name for r in roles)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
