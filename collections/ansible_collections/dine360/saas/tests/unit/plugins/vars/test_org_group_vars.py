# -*- coding: utf-8 -*-

# Copyright: (c) 2025, dine360.saas engineers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Unit tests of the dine360.saas.org_group_vars vars plugin.

The plugin is loaded through Ansible's own plugin loader and fed real DataLoader, Group and
Host objects and real files in a temporary directory. Runs under ``ansible-test units`` and
under plain pytest (which then configures the collection loader itself).
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import copy
import json
import os

import pytest

from ansible import constants as C
from ansible.errors import AnsibleParserError
from ansible.inventory.group import Group
from ansible.inventory.host import Host
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import init_plugin_loader, vars_loader
from ansible.utils.collection_loader import AnsibleCollectionConfig

PLUGIN = 'dine360.saas.org_group_vars'
ENV = 'DINE360_ORG_VARS_DIR'


def _collections_root():
    here = os.path.dirname(os.path.abspath(__file__))
    while os.path.basename(here) != 'ansible_collections':
        parent = os.path.dirname(here)
        if parent == here:
            raise RuntimeError('test file is not inside an ansible_collections tree')
        here = parent
    return os.path.dirname(here)


if AnsibleCollectionConfig.collection_finder is None:  # plain pytest, not ansible-test units
    init_plugin_loader([_collections_root()])


def _module():
    return __import__('ansible_collections.dine360.saas.plugins.vars.org_group_vars', fromlist=['VarsModule'])


def _write(path, text):
    if not os.path.isdir(os.path.dirname(path)):
        os.makedirs(os.path.dirname(path))
    with open(path, 'w') as f:
        f.write(text)


@pytest.fixture
def plugin(monkeypatch):
    """A fresh copy of the loaded plugin: options are read again from config and environment."""
    monkeypatch.delenv(ENV, raising=False)
    shared = vars_loader.get(PLUGIN)
    assert shared is not None, 'vars plugin %s not found' % PLUGIN
    fresh = copy.copy(shared)
    fresh._options = {}
    fresh._origins = {}
    module = _module()
    for cache in (module.FOUND, module.NAK, module.CANONICAL_PATHS):
        cache.clear()
    return fresh


@pytest.fixture
def org_dir(tmp_path, monkeypatch):
    path = tmp_path / 'org' / 'group_vars'
    path.mkdir(parents=True)
    monkeypatch.setenv(ENV, str(path))
    return path


def test_plugin_is_stateless_and_runs_at_inventory_stage(plugin):
    assert plugin.is_stateless
    assert plugin.get_option('stage') == 'inventory'
    assert not hasattr(plugin, 'REQUIRES_ENABLED')


def test_loads_group_file(plugin, org_dir):
    _write(str(org_dir / 'all.yml'), 'org_key: org\nnested:\n  a: 1\n')
    assert plugin.get_vars(DataLoader(), '/nonexistent/inventory', [Group('all')]) == {'org_key': 'org', 'nested': {'a': 1}}


def test_single_entity_is_accepted(plugin, org_dir):
    _write(str(org_dir / 'all.yml'), 'org_key: org\n')
    assert plugin.get_vars(DataLoader(), '/inv', Group('all')) == {'org_key': 'org'}


@pytest.mark.parametrize('name', ['web.yaml', 'web.json'])
def test_other_extensions(plugin, org_dir, name):
    content = json.dumps({'web_key': 'w'}) if name.endswith('.json') else 'web_key: w\n'
    _write(str(org_dir / name), content)
    assert plugin.get_vars(DataLoader(), '/inv', [Group('web')]) == {'web_key': 'w'}


def test_loads_every_file_of_group_directory(plugin, org_dir):
    _write(str(org_dir / 'db' / '10-first.yml'), 'a: first\nb: first\n')
    _write(str(org_dir / 'db' / '20-second.yml'), 'b: second\n')
    _write(str(org_dir / 'db' / 'sub' / 'c.yaml'), 'c: sub\n')
    _write(str(org_dir / 'db' / '.hidden.yml'), 'hidden: true\n')
    _write(str(org_dir / 'db' / 'backup.yml~'), 'backup: true\n')
    _write(str(org_dir / 'db' / 'notes.txt'), 'text: true\n')
    assert plugin.get_vars(DataLoader(), '/inv', [Group('db')]) == {'a': 'first', 'b': 'second', 'c': 'sub'}


def test_nothing_for_hosts(plugin, org_dir):
    _write(str(org_dir / 'pg1.yml'), 'host_key: nope\n')
    _write(str(org_dir / 'all.yml'), 'org_key: org\n')
    assert plugin.get_vars(DataLoader(), '/inv', [Host('pg1')]) == {}


def test_unknown_group_gives_nothing(plugin, org_dir):
    _write(str(org_dir / 'all.yml'), 'org_key: org\n')
    assert plugin.get_vars(DataLoader(), '/inv', [Group('other')]) == {}


def test_later_groups_win(plugin, org_dir):
    _write(str(org_dir / 'all.yml'), 'k: all\nonly_all: 1\n')
    _write(str(org_dir / 'web.yml'), 'k: web\n')
    assert plugin.get_vars(DataLoader(), '/inv', [Group('all'), Group('web')]) == {'k': 'web', 'only_all': 1}


def test_inline_group_vars_of_inventory_win(plugin, org_dir):
    _write(str(org_dir / 'web.yml'), 'k: org\norg_only: org\n')
    group = Group('web')
    group.set_variable('k', 'inventory')
    assert plugin.get_vars(DataLoader(), '/inv', [group]) == {'k': 'inventory', 'org_only': 'org'}


def test_inline_vars_are_not_returned_without_org_vars(plugin, org_dir):
    group = Group('web')
    group.set_variable('k', 'inventory')
    assert plugin.get_vars(DataLoader(), '/inv', [group]) == {}


def test_empty_file_is_ignored(plugin, org_dir):
    _write(str(org_dir / 'all.yml'), '---\n')
    assert plugin.get_vars(DataLoader(), '/inv', [Group('all')]) == {}


def test_files_are_trusted_templates(plugin, org_dir):
    template = pytest.importorskip('ansible.template')
    if not hasattr(template, 'is_trusted_as_template'):
        pytest.skip('trusted templates exist from ansible-core 2.19 on')
    _write(str(org_dir / 'all.yml'), 'greeting: "{{ name }}"\n')
    data = plugin.get_vars(DataLoader(), '/inv', [Group('all')])
    assert template.is_trusted_as_template(data['greeting'])


def test_invalid_yaml_is_a_parser_error(plugin, org_dir):
    _write(str(org_dir / 'all.yml'), 'a: [unclosed\n')
    with pytest.raises(AnsibleParserError):
        plugin.get_vars(DataLoader(), '/inv', [Group('all')])


def test_missing_explicit_dir_warns_and_gives_nothing(plugin, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(ENV, str(tmp_path / 'missing'))
    assert plugin.get_vars(DataLoader(), '/inv', [Group('all')]) == {}
    assert 'is not a directory' in capsys.readouterr().err


def test_group_vars_beside_config_file(plugin, tmp_path, monkeypatch):
    (tmp_path / 'ansible.cfg').write_text(u'[defaults]\n')
    _write(str(tmp_path / 'group_vars' / 'all.yml'), 'from_cfg_dir: yes-it-is\n')
    monkeypatch.setattr(C, 'CONFIG_FILE', str(tmp_path / 'ansible.cfg'))
    assert plugin.get_vars(DataLoader(), '/inv', [Group('all')]) == {'from_cfg_dir': 'yes-it-is'}


def test_env_wins_over_config_file_dir(plugin, tmp_path, org_dir, monkeypatch):
    (tmp_path / 'ansible.cfg').write_text(u'[defaults]\n')
    _write(str(tmp_path / 'group_vars' / 'all.yml'), 'k: cfg\n')
    _write(str(org_dir / 'all.yml'), 'k: env\n')
    monkeypatch.setattr(C, 'CONFIG_FILE', str(tmp_path / 'ansible.cfg'))
    assert plugin.get_vars(DataLoader(), '/inv', [Group('all')]) == {'k': 'env'}


def test_no_config_file_and_no_env_gives_nothing(plugin, monkeypatch):
    monkeypatch.setattr(C, 'CONFIG_FILE', None)
    assert plugin.get_vars(DataLoader(), '/inv', [Group('all')]) == {}


def test_config_dir_without_group_vars_gives_nothing(plugin, tmp_path, monkeypatch, capsys):
    (tmp_path / 'ansible.cfg').write_text(u'[defaults]\n')
    monkeypatch.setattr(C, 'CONFIG_FILE', str(tmp_path / 'ansible.cfg'))
    assert plugin.get_vars(DataLoader(), '/inv', [Group('all')]) == {}
    assert 'is not a directory' not in capsys.readouterr().err


def test_found_files_are_cached_per_group_and_dir(plugin, org_dir):
    _write(str(org_dir / 'all.yml'), 'k: 1\n')
    loader = DataLoader()
    assert plugin.get_vars(loader, '/inv', [Group('all')]) == {'k': 1}
    module = _module()
    assert module.FOUND[('all', os.path.realpath(str(org_dir)))] == [os.path.join(os.path.realpath(str(org_dir)), 'all.yml')]
    # A file added later is only seen without the cache (as with host_group_vars).
    _write(str(org_dir / 'all' / 'extra.yml'), 'extra: 2\n')
    assert plugin.get_vars(loader, '/inv', [Group('all')]) == {'k': 1}
    assert plugin.get_vars(DataLoader(), '/inv', [Group('all')], cache=False) == {'extra': 2}
