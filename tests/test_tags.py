"""A tag does only what its name says: destructive steps run only under their operation's name.

Every tag that ``ansible-playbook --list-tags`` shows for every playbook is walked (issue 18):

* the plays that restore or dump tenants (``tenants_operation``) are selected only by their own
  tag (``restore``, ``dump``), never by another tag or by a run without tags;
* the tenants reconciler may drop databases (``drop``) and the filestore step may move
  filestores aside only under ``--tags offboard``: the playbook's own expressions are rendered
  with Ansible's templar for each tag, as ``ansible_run_tags`` would be;
* a restore onto the live database asks for ``-e confirm_restore=<tenant>``.

Tag selection is read from one real ``--list-tasks --tags all,never`` per playbook and
evaluated with Ansible's rules (``always``, ``never``, ``all``); a few tags are checked against
real ``--list-tasks --tags <tag>`` runs so the two cannot drift apart.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar, trust_as_template

REPO = Path(__file__).resolve().parents[1]
PLAYBOOKS = sorted(p.name for p in (REPO / "playbooks").glob("*.yml"))
BIN = Path(sys.executable).parent
SPECIAL = {"all", "always", "never", "tagged", "untagged"}
# Entry tasks of destructive operations, by the tag that names the operation.
DESTRUCTIVE = {"Restore the tenant": "restore", "Dump the tenants": "dump"}
PLAY_RE = re.compile(r"^  play #\d+ \((?P<hosts>.*)\): (?P<name>.*)\tTAGS: \[(?P<tags>.*)\]$")
TASK_RE = re.compile(r"^      (?P<name>.*)\tTAGS: \[(?P<tags>.*)\]$")


def _ansible(*args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", "inventories/lab", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


def _tasks(playbook, tags="all,never"):
    """[(play name, task name, task tags)] as --list-tasks prints them."""
    out, play = [], None
    for line in _ansible(f"playbooks/{playbook}", "--list-tasks", "--tags", tags).splitlines():
        m = PLAY_RE.match(line)
        if m:
            play = m["name"]
            continue
        m = TASK_RE.match(line)
        if m:
            out.append((play, m["name"], {t.strip() for t in m["tags"].split(",") if t.strip()}))
    return out


def _selected(task_tags, run_tag):
    """Ansible's rule (TaggableMixin.evaluate_tags) for one --tags value ('all' = no --tags)."""
    if "always" in task_tags:
        return True
    if run_tag == "all":
        return "never" not in task_tags
    return run_tag in task_tags


@pytest.fixture(scope="module")
def listings():
    return {p: _tasks(p) for p in PLAYBOOKS}


def _walk_tags(listing):
    tags = set()
    for _, _, t in listing:
        tags |= t
    return sorted(tags - SPECIAL) + ["all"]


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_no_tag_selects_a_destructive_step_it_does_not_name(listings, playbook):
    listing = listings[playbook]
    assert listing, f"{playbook}: --list-tasks listed nothing"
    wrong = []
    for run_tag in _walk_tags(listing):
        for play, name, tags in listing:
            op = DESTRUCTIVE.get(name)
            if op and _selected(tags, run_tag) and run_tag != op:
                wrong.append(f"--tags {run_tag} selects {name!r} ({play})")
    assert not wrong, f"{playbook}: " + "; ".join(wrong)


def test_destructive_entry_tasks_are_listed(listings):
    """The walk above is not empty: both entry tasks exist, in tenants.yml and in site.yml."""
    for playbook in ("tenants.yml", "site.yml"):
        names = {name for _, name, _ in listings[playbook]}
        assert set(DESTRUCTIVE) <= names, f"{playbook}: {sorted(set(DESTRUCTIVE) - names)} not found"


@pytest.mark.parametrize("run_tag, restore_listed", [("tenants", False), ("onboard", False), ("restore", True)])
def test_the_tag_rule_matches_ansible(run_tag, restore_listed):
    """Real --list-tasks with one tag agrees with the rule the walk uses."""
    listed = {name for _, name, _ in _tasks("tenants.yml", run_tag)}
    assert ("Restore the tenant" in listed) == restore_listed, sorted(listed)


def _plays(playbook, base=REPO / "playbooks"):
    """Every play of a playbook, imports followed (relative to the importing file)."""
    path = base / playbook
    for play in yaml.safe_load(path.read_text()):
        if "ansible.builtin.import_playbook" in play:
            yield from _plays(play["ansible.builtin.import_playbook"], path.parent)
        else:
            yield play


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_plays_that_restore_or_dump_are_tagged_for_it_only(playbook):
    for play in _plays(playbook):
        op = (play.get("vars") or {}).get("tenants_operation")
        if op in ("restore", "dump"):
            assert set(play.get("tags", [])) == {op, "never"}, f"{playbook}: play {play['name']!r} tags {play.get('tags')}"


def _render(expr, run_tags, **extra):
    templar = Templar(loader=DataLoader(), variables=dict(ansible_run_tags=run_tags, **extra))
    return templar.template(trust_as_template(expr))


def test_only_offboard_drops_databases_or_moves_filestores_aside():
    plays = list(_plays("tenants.yml"))
    reconcile = next(p for p in plays if p["name"].startswith("Tenants - databases"))
    filestores = next(p for p in plays if p["name"].startswith("Tenants - filestores"))
    retire = filestores["tasks"][0]["vars"]["odoo_retire_filestores"]
    tags = set(reconcile["tags"]) | set(filestores["tags"]) | {"tenants", "preflight", "all"}
    for run_tag in sorted(tags):
        variables = dict(reconcile["vars"])
        actions = _render(variables["tenants_actions"], [run_tag], _tenants_tag_actions=variables["_tenants_tag_actions"])
        assert ("drop" in actions) == (run_tag == "offboard"), f"--tags {run_tag}: actions {actions}"
        assert _render(retire, [run_tag]) == (run_tag == "offboard"), f"--tags {run_tag}: filestores moved aside"


def test_a_restore_onto_the_live_database_needs_its_confirmation():
    restore = yaml.safe_load((REPO / "collections/ansible_collections/dine360/saas/roles/tenants/tasks/restore.yml").read_text())
    first_change = next(i for i, t in enumerate(restore) if "dine360.saas.tenant_dump" in t or "ansible.builtin.include_tasks" in t)
    guard = [t for t in restore[:first_change] if "ansible.builtin.assert" in t and any(
        "tenants_restore_confirm" in c for c in t["ansible.builtin.assert"]["that"])]
    assert guard, "no confirmation check before the first step of a restore"
    that = guard[0]["ansible.builtin.assert"]["that"][0]
    for restore_as, confirm, ok in [("", "", False), ("", "other", False), ("", "pizza-roma", True), ("copy", "", True)]:
        assert _render("{{ " + that + " }}", ["restore"], tenants_restore_as=restore_as,
                       tenants_restore_confirm=confirm, tenants_only=["pizza-roma"]) is ok


@pytest.mark.parametrize("playbook", ["app_tier.yml", "site.yml"])
def test_tags_odoo_deploys_odoo_and_its_templates(listings, playbook):
    """--tags odoo selects the Odoo role and the template plays (it selected nothing before)."""
    selected = {name for _, name, tags in listings[playbook] if _selected(tags, "odoo") and "always" not in tags}
    assert {"Deploy Odoo", "Build this group's template", "Seal the templates that were built"} <= selected, sorted(selected)
