"""The prometheus role's alert rules: rendered with Ansible's own templating from the role
defaults, then checked and unit-tested by promtool (Prometheus 2.42, Debian 12).

* `promtool check rules` on the rendered file;
* `promtool test rules` on every tests/alerts/*.yml: each names the rules file as
  `dine360-alerts.rules.yml` and is copied next to the rendered file in a temporary directory;
* every alert has `severity` (critical or warning), `summary`, `description` and a
  `runbook_url` pointing at `<prometheus_alert_runbook_url>#<alert name in lower case>`,
  a section with that anchor in docs/runbooks/alerts.md, and at least one test case where
  it fires and one where it does not.

promtool is required: the test fails (it does not skip) when it is missing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ROLE = REPO / "collections" / "ansible_collections" / "dine360" / "saas" / "roles" / "prometheus"
TEMPLATE = ROLE / "templates" / "dine360-alerts.rules.yml.j2"
DEFAULTS = ROLE / "defaults" / "main.yml"
TESTS_DIR = REPO / "tests" / "alerts"
RUNBOOKS = REPO / "docs" / "runbooks" / "alerts.md"
RULES_NAME = "dine360-alerts.rules.yml"


def render(extra_vars: dict | None = None) -> str:
    """Render the rules template the way the template module does (trim_blocks, no lstrip)."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.template import Templar, trust_as_template

    loader = DataLoader()
    variables = dict(loader.load_from_file(str(DEFAULTS)) or {})
    variables["ansible_managed"] = "Ansible managed"
    variables.update(extra_vars or {})
    templar = Templar(loader=loader, variables=variables)
    source = trust_as_template(TEMPLATE.read_text(encoding="utf-8"))
    overrides = dict(trim_blocks=True, lstrip_blocks=False, newline_sequence="\n")
    return templar.template(source, escape_backslashes=False, overrides=overrides)


def promtool() -> str:
    path = shutil.which("promtool")
    if not path:
        pytest.fail("promtool is not installed (package 'prometheus'): scripts/setup.sh installs it")
    return path


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=str(cwd), capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rules")
    rules = out / RULES_NAME
    rules.write_text(render(), encoding="utf-8")
    return rules


@pytest.fixture(scope="module")
def rule_groups(rendered) -> list[dict]:
    return yaml.safe_load(rendered.read_text(encoding="utf-8"))["groups"]


def alerts(groups: list[dict]) -> list[dict]:
    return [r for g in groups for r in g["rules"] if "alert" in r]


def test_rendered_file_starts_with_ansible_managed(rendered):
    text = rendered.read_text(encoding="utf-8")
    assert text.startswith("#\n# Ansible managed\n#\n"), text[:200]
    assert "{%" not in text and "{#" not in text, "Jinja left in the rendered rules"


def test_promtool_check_rules(rendered):
    proc = run([promtool(), "check", "rules", str(rendered)], rendered.parent)
    assert proc.returncode == 0, "promtool check rules failed:\n%s%s\n--- rendered file ---\n%s" % (
        proc.stdout, proc.stderr, rendered.read_text(encoding="utf-8"))


TEST_FILES = sorted(TESTS_DIR.glob("*.yml"))


def test_there_are_unit_tests():
    assert TEST_FILES, f"no promtool unit tests in {TESTS_DIR}"


@pytest.mark.parametrize("test_file", TEST_FILES, ids=[p.name for p in TEST_FILES])
def test_promtool_test_rules(rendered, test_file):
    data = yaml.safe_load(test_file.read_text(encoding="utf-8"))
    assert data.get("rule_files") == [RULES_NAME], f"{test_file.name}: rule_files must be [{RULES_NAME}]"
    copy = rendered.parent / test_file.name
    shutil.copyfile(test_file, copy)
    proc = run([promtool(), "test", "rules", copy.name], rendered.parent)
    assert proc.returncode == 0, f"promtool test rules {test_file.name} failed:\n{proc.stdout}{proc.stderr}"


def test_every_alert_has_labels_annotations_and_runbook(rule_groups):
    base = yaml.safe_load(DEFAULTS.read_text(encoding="utf-8"))["prometheus_alert_runbook_url"]
    runbook_text = RUNBOOKS.read_text(encoding="utf-8")
    headings = {h.strip().lower() for h in re.findall(r"^## +(\S+) *$", runbook_text, flags=re.M)}
    problems, names = [], []
    for rule in alerts(rule_groups):
        name = rule["alert"]
        names.append(name)
        if rule.get("labels", {}).get("severity") not in ("critical", "warning"):
            problems.append(f"{name}: severity label must be critical or warning")
        ann = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            if not ann.get(key):
                problems.append(f"{name}: no {key} annotation")
        if ann.get("runbook_url") != f"{base}#{name.lower()}":
            problems.append(f"{name}: runbook_url {ann.get('runbook_url')!r} is not {base}#{name.lower()}")
        if name.lower() not in headings:
            problems.append(f"{name}: no '## {name}' section in {RUNBOOKS.relative_to(REPO)}")
    assert len(names) == len(set(names)), f"duplicate alert names: {sorted(names)}"
    assert not problems, "\n".join(problems)


def test_every_for_and_threshold_comes_from_the_defaults(rule_groups):
    defaults = yaml.safe_load(DEFAULTS.read_text(encoding="utf-8"))
    group_keys = {g["name"].removeprefix("dine360-") for g in rule_groups}
    assert group_keys == set(defaults["prometheus_alert_for"]), (
        "prometheus_alert_for must have one key per rule group: groups %s, keys %s"
        % (sorted(group_keys), sorted(defaults["prometheus_alert_for"])))
    template = TEMPLATE.read_text(encoding="utf-8")
    unused = [k for k in defaults["prometheus_alert_thresholds"] if not re.search(r"\bt\.%s\b" % k, template)]
    assert not unused, f"thresholds the template never uses: {unused}"
    for rule in alerts(rule_groups):
        group = next(g["name"] for g in rule_groups if rule in g["rules"])
        assert rule.get("for") == defaults["prometheus_alert_for"][group.removeprefix("dine360-")], rule["alert"]


def test_every_alert_has_a_firing_and_a_quiet_case(rule_groups):
    fires, quiet = set(), set()
    for path in TEST_FILES:
        for test in yaml.safe_load(path.read_text(encoding="utf-8")).get("tests", []):
            for case in test.get("alert_rule_test", []):
                (fires if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {r["alert"] for r in alerts(rule_groups)}
    missing = sorted(f"{n}: no firing case" for n in names - fires) + sorted(
        f"{n}: no case where it stays quiet" for n in names - quiet)
    assert not missing, "\n".join(missing)
    unknown = (fires | quiet) - names
    assert not unknown, f"tests name alerts the rules do not have: {sorted(unknown)}"


def test_short_durations_render(tmp_path):
    """A test environment shortens every `for:` (the live tests use seconds)."""
    defaults = yaml.safe_load(DEFAULTS.read_text(encoding="utf-8"))
    short = {k: "10s" for k in defaults["prometheus_alert_for"]}
    rules = tmp_path / RULES_NAME
    rules.write_text(render({"prometheus_alert_for": short}), encoding="utf-8")
    proc = run([promtool(), "check", "rules", str(rules)], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    fors = {r["for"] for g in yaml.safe_load(rules.read_text(encoding="utf-8"))["groups"] for r in g["rules"]}
    assert fors == {"10s"}, fors
